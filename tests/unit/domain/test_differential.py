from __future__ import annotations

from dataclasses import dataclass

import pytest

from stainless.domain.cells import CLASS_ORDER, LEUKOCYTES, CellClass
from stainless.domain.differential import (
    ClinicalRules,
    ProportionRule,
    differential,
    flags,
)
from stainless.domain.review import ReviewAction, ReviewStatus, status_of
from stainless.domain.vocabulary import CLINICAL


@dataclass(frozen=True)
class Seen:
    effective_class: str | None
    review_status: ReviewStatus = ReviewStatus.CONFIRMED


def test_percentages_are_over_the_leukocytes_only() -> None:
    cells = [Seen("LY"), Seen("LY"), Seen("SNE"), Seen("ART"), Seen("SMU")]
    diff = differential(cells)
    assert diff.counts["LY"] == 2 and diff.counts["ART"] == 1 and diff.counts["SMU"] == 1
    assert diff.leukocytes == 3 and diff.counted == 5
    assert diff.percent == {"BA": 0.0, "EO": 0.0, "LY": 66.7, "MO": 0.0, "SNE": 33.3}


def test_pending_poor_quality_and_review_are_counted_apart() -> None:
    cells = [
        Seen(None, ReviewStatus.PENDING),
        Seen("MO", ReviewStatus.POOR_QUALITY),
        Seen("EO", ReviewStatus.NEEDS_REVIEW),
    ]
    diff = differential(cells)
    assert (diff.pending, diff.poor_quality, diff.needs_review, diff.counted) == (1, 1, 1, 1)
    assert diff.total == 3 and diff.counts["MO"] == 0


def test_no_leukocyte_means_no_percentage() -> None:
    diff = differential([Seen("ART")])
    assert diff.leukocytes == 0 and set(diff.percent.values()) == {None}


def test_a_flag_per_pathological_class_present() -> None:
    diff = differential([Seen("SMU"), Seen("LY", ReviewStatus.NEEDS_REVIEW)])
    found = flags(diff, ClinicalRules(pathological=("SMU", "BA")))
    assert found.pathological == ["SMU"] and found.needs_review == 1 and found.pending == 0
    assert not found.proportions_assessed and found.abnormal == []


def test_the_clinical_differential_counts_erythroblasts_per_100_leukocytes() -> None:
    cells = [Seen("NE")] * 6 + [Seen("BL")] * 2 + [Seen("LY")] * 2 + [Seen("ERB")] * 3
    cells += [Seen("SMU"), Seen("ART")]
    diff = differential(cells, CLINICAL)
    assert diff.vocabulary == "clinical" and diff.leukocytes == 10 and diff.counted == 15
    assert diff.percent["NE"] == 60.0 and diff.percent["BL"] == 20.0
    assert "ERB" not in diff.percent and diff.per_100_leukocytes == {"ERB": 30.0}
    assert set(diff.percent) == set(CLINICAL.leukocytes)
    assert diff.counts["SMU"] == 1 and diff.counts["ART"] == 1
    low, high = diff.percent_interval["NE"] or (0, 0)
    assert low < 60.0 < high


def test_proportions_are_flagged_only_once_the_count_is_reached() -> None:
    rules = ClinicalRules(
        proportions=(ProportionRule("NE", low=40, high=75), ProportionRule("LY", high=45)),
        count=100,
    )
    cells = [Seen("SNE")] * 30 + [Seen("LY")] * 60 + [Seen("MO")] * 10
    found = flags(differential(cells), rules)  # SNE counts as the clinical NE
    assert found.proportions_assessed
    assert [str(a) for a in found.abnormal] == ["NE low (30.0% < 40%)", "LY high (60.0% > 45%)"]
    few = flags(differential(cells[:99]), rules)
    assert not few.proportions_assessed and few.abnormal == []
    normal = [Seen("SNE")] * 60 + [Seen("LY")] * 30 + [Seen("MO")] * 10
    assert flags(differential(normal), rules).abnormal == []


def test_a_proportion_rule_is_checked() -> None:
    with pytest.raises(ValueError, match="unknown cell class 'XX'"):
        ProportionRule("XX", high=3)
    with pytest.raises(ValueError, match="needs a low or a high"):
        ProportionRule("LY")
    with pytest.raises(ValueError, match="above high"):
        ProportionRule("LY", low=50, high=20)


def test_vocabulary() -> None:
    assert tuple(c.value for c in CellClass) == CLASS_ORDER
    assert set(LEUKOCYTES) < set(CLASS_ORDER)
    assert status_of("reclassify") is ReviewStatus.RECLASSIFIED
    assert status_of(ReviewAction.POOR_QUALITY) is ReviewStatus.POOR_QUALITY
