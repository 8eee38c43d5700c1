from __future__ import annotations

import pytest

from stainless.ml.metrics.agreement import (
    POOR_QUALITY,
    cohen_kappa,
    confusion_matrix,
    rater_summary,
)

CLASSES = ("NE", "LY", "BL")
REFERENCE = ["NE", "NE", "NE", "LY", "LY", "BL"]
EXPERT = ["NE", "NE", "LY", "LY", POOR_QUALITY, "LY"]


def test_the_confusion_matrix_has_a_poor_quality_column() -> None:
    matrix = confusion_matrix(REFERENCE, EXPERT, CLASSES)
    assert matrix["NE"] == {"NE": 2, "LY": 1, "BL": 0, "PQ": 0}
    assert matrix["LY"] == {"NE": 0, "LY": 1, "BL": 0, "PQ": 1}
    assert matrix["BL"] == {"NE": 0, "LY": 1, "BL": 0, "PQ": 0}
    with pytest.raises(ValueError, match=r"outside the study's: \['EO'\]"):
        confusion_matrix(["EO"], ["NE"], CLASSES)
    with pytest.raises(ValueError, match="one label per cell"):
        confusion_matrix(REFERENCE, EXPERT[:-1], CLASSES)


def test_a_rater_summary_worked_by_hand() -> None:
    summary = rater_summary(REFERENCE, EXPERT, CLASSES)
    assert summary.accuracy == pytest.approx(3 / 6)  # PQ counts as wrong
    assert summary.recall == {"NE": pytest.approx(2 / 3), "LY": 0.5, "BL": 0.0}
    assert summary.correct == {"NE": (2, 3), "LY": (1, 2), "BL": (0, 1)}
    # F1: NE 2*2/(3+2) = 0.8, LY 2*1/(2+3) = 0.4, BL 0
    assert summary.macro_f1 == pytest.approx((0.8 + 0.4 + 0.0) / 3)
    assert summary.poor_quality == pytest.approx(1 / 6)


def test_cohen_kappa_worked_by_hand() -> None:
    # agree on 3 of 6: p_o = 1/2; marginals NE 3/2, LY 2/3, BL 1/0, PQ 0/1
    # p_e = (3*2 + 2*3 + 0 + 0) / 36 = 1/3 -> kappa = (1/2 - 1/3) / (2/3) = 0.25
    assert cohen_kappa(REFERENCE, EXPERT) == pytest.approx(0.25)
    assert cohen_kappa(EXPERT, EXPERT) == 1.0
    assert cohen_kappa(["NE", "NE"], ["NE", "NE"]) == 1.0
    assert cohen_kappa(["NE", "LY"], ["LY", "NE"]) == pytest.approx(-1.0)
