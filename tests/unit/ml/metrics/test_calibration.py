"""Isotonic calibration of δ, the review threshold for a target sensitivity, reliability."""

from __future__ import annotations

import numpy as np
import pytest

from stainless.ml.metrics.calibration import fit_calibration, reliability, review_threshold_for


def _cells(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Acceptable with probability rising with δ (a logistic around δ = 2)."""
    rng = np.random.default_rng(seed)
    delta = rng.uniform(1.0, 3.0, n)
    acceptable = rng.random(n) < 1 / (1 + np.exp(-4 * (delta - 2.0)))
    return delta, acceptable


def test_isotonic_calibration_rises_and_matches_the_truth() -> None:
    delta, acceptable = _cells()
    calibration = fit_calibration(delta, acceptable)
    grid = np.linspace(1.0, 3.0, 21)
    p = calibration.probability(grid)
    assert np.all(np.diff(p) >= 0) and p[0] < 0.15 and p[-1] > 0.85
    truth = 1 / (1 + np.exp(-4 * (grid - 2.0)))
    assert float(np.abs(p - truth).mean()) < 0.1
    assert calibration.as_dict()["delta"] == list(calibration.knots)


def test_review_threshold_reaches_the_sensitivity_at_the_least_cost() -> None:
    delta = np.array([0.5, 0.6, 0.7, 0.8, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5])
    acceptable = np.array([0, 1, 0, 1, 1, 0, 1, 1, 1, 1], bool)  # unacceptable: .5 .7 1.1
    review = review_threshold_for(delta, acceptable, 0.6)  # 2 of 3 must lie below
    assert 0.7 < review["threshold"] < 0.8
    assert review["sensitivity"] == pytest.approx(2 / 3)
    assert review["review_fraction"] == pytest.approx(0.3)  # .5 .6 .7
    full = review_threshold_for(delta, acceptable, 1.0)
    assert 1.1 < full["threshold"] < 1.2 and full["sensitivity"] == 1.0
    none = review_threshold_for(delta, np.ones(10, bool), 0.9)
    assert none["threshold"] is None and none["unacceptable"] == 0
    with pytest.raises(ValueError, match="sensitivity"):
        review_threshold_for(delta, acceptable, 0.0)


def test_reliability_bins_hold_every_cell() -> None:
    delta, acceptable = _cells(n=103)
    p = fit_calibration(delta, acceptable).probability(delta)
    rows = reliability(p, acceptable, bins=5)
    assert len(rows) == 5 and sum(r["cells"] for r in rows) == 103
    assert [r["predicted"] for r in rows] == sorted(r["predicted"] for r in rows)
    with pytest.raises(ValueError, match="equally long"):
        reliability(p, acceptable[:5])
