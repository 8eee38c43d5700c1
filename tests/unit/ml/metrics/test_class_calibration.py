"""Class-probability calibration: the scaling recovered, the ECE by hand, cross-fitting."""

from __future__ import annotations

import numpy as np
import pytest

from stainless.ml.metrics.class_calibration import (
    Scaling,
    calibrate_classifier,
    fit_scaling,
    negative_log_likelihood,
    softmax,
    top_label_ece,
    top_label_reliability,
)


def _sampled(
    scale: float, bias: np.ndarray, cells: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Logits whose true class is drawn from softmax(scale * logits + bias)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(cells, bias.size))
    p = softmax(scale * logits + bias)
    labels = np.array([rng.choice(bias.size, p=row) for row in p])
    return logits, labels


def test_the_scaling_the_labels_were_drawn_with_is_recovered() -> None:
    bias = np.array([1.0, -0.5, -0.5])
    logits, labels = _sampled(4.0, bias, 4000)
    fitted = fit_scaling(logits, labels)
    assert fitted.scale == pytest.approx(4.0, rel=0.1)
    assert np.allclose(fitted.bias, bias - bias.mean(), atol=0.15)
    assert negative_log_likelihood(fitted.logits(logits), labels) < negative_log_likelihood(
        logits, labels
    )


def test_the_ece_is_the_weighted_gap_between_confidence_and_accuracy() -> None:
    probabilities = np.array([[0.9, 0.1], [0.4, 0.6], [0.55, 0.45], [0.2, 0.8]])
    labels = np.array([0, 0, 0, 1])
    # bins: 0.9 (right), 0.6 (wrong), 0.55 (right), 0.8 (right)
    # [0.5, 0.6): 0.575 vs 0.5 over 2 cells; [0.8, 0.9): 0.8 vs 1; [0.9, 1]: 0.9 vs 1
    rows = top_label_reliability(probabilities, labels)
    assert [r["cells"] for r in rows] == [2, 1, 1]
    expected = 0.5 * abs(0.575 - 0.5) + 0.25 * abs(0.8 - 1) + 0.25 * abs(0.9 - 1)
    assert top_label_ece(probabilities, labels) == pytest.approx(expected)


def test_flat_logits_with_class_offsets_are_calibrated_on_held_out_halves() -> None:
    # a classifier that ranks right but whose logits are offsets plus a tenth of signal
    offsets = np.array([0.3, -1.6, 0.1, 0.2, 0.1, 0.2, 0.3])
    logits, labels = _sampled(10.0, np.zeros(7), 600, seed=1)
    flat = 0.1 * logits + offsets
    found = calibrate_classifier(flat, labels)
    assert found.ece_raw > 0.2
    assert found.ece_calibrated is not None and found.ece_calibrated < 0.06
    assert found.nll_calibrated is not None and found.nll_calibrated < found.nll_raw
    assert found.scaling is not None and found.scaling.scale == pytest.approx(100, rel=0.2)
    assert found.as_dict()["scaling"]["bias"] == list(found.scaling.bias)


def test_too_few_cells_fit_nothing_and_say_so() -> None:
    logits, labels = _sampled(2.0, np.zeros(3), 40)
    found = calibrate_classifier(logits, labels, min_cells=100)
    assert found.scaling is None and found.ece_calibrated is None
    assert "40 calibration cells, fewer than 100" in found.note


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="labels must lie"):
        fit_scaling(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(ValueError, match="NaN"):
        top_label_ece(np.array([[np.nan, 1.0]]), np.array([0]))
    with pytest.raises(ValueError, match="positive"):
        Scaling(0.0, (0.0, 0.0))
    with pytest.raises(ValueError, match="logits"):
        Scaling(1.0, (0.0, 0.0)).logits(np.zeros((2, 3)))
