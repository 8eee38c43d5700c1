from __future__ import annotations

from dataclasses import dataclass

from stainless.domain.cells import CLASS_ORDER, LEUKOCYTES, CellClass
from stainless.domain.differential import differential, flags
from stainless.domain.review import ReviewAction, ReviewStatus, status_of


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
    found = flags(diff, pathological_classes=["SMU", "BA"])
    assert found.pathological == ["SMU"] and found.needs_review == 1 and found.pending == 0


def test_vocabulary() -> None:
    assert tuple(c.value for c in CellClass) == CLASS_ORDER
    assert set(LEUKOCYTES) < set(CLASS_ORDER)
    assert status_of("reclassify") is ReviewStatus.RECLASSIFIED
    assert status_of(ReviewAction.POOR_QUALITY) is ReviewStatus.POOR_QUALITY
