"""Pearson, Spearman and partial correlation, and their bootstrap intervals."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from stainless.ml.metrics.correlation import (
    bootstrap_interval,
    correlation_summary,
    partial_r,
    pearson_r,
    spearman_r,
)


def _sample(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """y depends on x only through a shared driver z (a cell's area, say)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=n)
    return z + 0.5 * rng.normal(size=n), z + 0.5 * rng.normal(size=n), z


def test_pearson_and_spearman_agree_with_scipy() -> None:
    x, y, _ = _sample()
    assert pearson_r(x, y) == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-12)
    ranks = stats.spearmanr(np.round(x, 1), np.round(y, 1))[0]  # with ties
    assert spearman_r(np.round(x, 1), np.round(y, 1)) == pytest.approx(ranks, abs=1e-12)
    assert spearman_r(x, np.exp(x)) == pytest.approx(1.0)  # monotone, not linear


def test_partial_correlation_removes_the_shared_driver() -> None:
    x, y, z = _sample()
    assert pearson_r(x, y) > 0.7
    assert abs(partial_r(x, y, z)) < 0.15
    w = np.random.default_rng(1).normal(size=x.size)  # an unrelated control changes little
    assert partial_r(x, y, w) == pytest.approx(pearson_r(x, y), abs=0.05)


def test_bootstrap_interval_covers_and_narrows() -> None:
    x, y, _ = _sample(n=40)
    wide = bootstrap_interval(lambda i: pearson_r(x[i], y[i]), 40)
    assert wide is not None and wide[0] < pearson_r(x, y) < wide[1]
    x2, y2, _ = _sample(n=400)
    narrow = bootstrap_interval(lambda i: pearson_r(x2[i], y2[i]), 400)
    assert narrow is not None and narrow[1] - narrow[0] < (wide[1] - wide[0]) / 2
    assert bootstrap_interval(lambda i: 0.0, 2) is None  # too few items


def test_summary_reports_n_intervals_and_undefined_figures() -> None:
    x, y, z = _sample(n=60)
    summary = correlation_summary(x, y, z, resamples=300)
    assert summary["n"] == 60
    for key in ("pearson", "spearman", "partial"):
        low, high = summary[f"{key}_ci"]
        assert low <= summary[key] <= high
    assert "partial" not in correlation_summary(x, y, resamples=50)
    flat = correlation_summary(np.ones(10), y[:10], resamples=50)
    assert flat["pearson"] is None and flat["pearson_ci"] is None
    with pytest.raises(ValueError, match="equal length"):
        correlation_summary(x, y[:5])
    with pytest.raises(ValueError, match="NaN"):
        pearson_r([1.0, np.nan, 2.0], [1.0, 2.0, 3.0])
