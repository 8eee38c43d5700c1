"""Effective classes, the differential and the flags, with reviews overriding predictions."""

from __future__ import annotations

import pytest
from sqlmodel import Session

from stainless.core.http.errors import NotFound
from stainless.domain.differential import ClinicalRules
from stainless.domain.review import ReviewAction, ReviewStatus
from stainless.stages.review import queries
from stainless.stages.review.reviews import review_cell

from .conftest import CellSpec, World

NEEDS = ReviewStatus.NEEDS_REVIEW


def _summary(world: World, slide_id: str) -> queries.SlideSummary:
    return queries.slide_summary(world.engine, slide_id=slide_id, rules=ClinicalRules())


def test_reviews_override_predictions_and_poor_quality_is_left_out(world: World) -> None:
    built = world.slide(
        [
            CellSpec("SNE"),
            CellSpec("SNE"),
            CellSpec("SNE", NEEDS, 0.4),  # reclassified to LY below
            CellSpec("LY"),
            CellSpec("EO", NEEDS, 0.3),  # poor quality below
            CellSpec("MO", NEEDS, 0.5),  # still waiting
            CellSpec("SMU"),
            CellSpec("ART"),
            CellSpec(None),  # pending: no prediction yet
        ]
    )
    ids = built.cell_ids
    review_cell(
        world.engine, cell_id=ids[2], action=ReviewAction.RECLASSIFY, new_class="LY", reviewer="r"
    )
    review_cell(world.engine, cell_id=ids[4], action=ReviewAction.POOR_QUALITY, reviewer="r")
    summary = _summary(world, built.slide_id)
    diff = summary.differential
    assert diff.counts == {"ART": 1, "BA": 0, "EO": 0, "LY": 2, "MO": 1, "SNE": 2, "SMU": 1}
    assert diff.leukocytes == 5  # ART and SMU are counted but not in the denominator
    assert diff.percent == {"BA": 0.0, "EO": 0.0, "LY": 40.0, "MO": 20.0, "SNE": 40.0}
    assert (diff.counted, diff.poor_quality, diff.pending, diff.needs_review) == (7, 1, 1, 1)
    assert diff.total == 9
    assert summary.flags.pathological == ["SMU"]
    assert summary.flags.needs_review == 1 and summary.flags.pending == 1


def test_the_latest_reclassification_wins_and_a_later_confirm_keeps_it(world: World) -> None:
    built = world.slide([CellSpec("SNE", NEEDS)])
    cell = built.cell_ids[0]
    review_cell(
        world.engine, cell_id=cell, action=ReviewAction.RECLASSIFY, new_class="EO", reviewer="r"
    )
    review_cell(
        world.engine, cell_id=cell, action=ReviewAction.RECLASSIFY, new_class="BA", reviewer="r"
    )
    review_cell(world.engine, cell_id=cell, action=ReviewAction.CONFIRM, reviewer="r")
    view = queries.cell_view(world.engine, cell_id=cell)
    assert (view.effective_class, view.review_status) == ("BA", ReviewStatus.CONFIRMED)
    assert _summary(world, built.slide_id).differential.percent["BA"] == 100.0


def test_a_reviewed_poor_quality_cell_counts_again_when_reclassified(world: World) -> None:
    built = world.slide([CellSpec("LY")])
    cell = built.cell_ids[0]
    review_cell(world.engine, cell_id=cell, action=ReviewAction.POOR_QUALITY, reviewer="r")
    assert _summary(world, built.slide_id).differential.counted == 0
    review_cell(
        world.engine, cell_id=cell, action=ReviewAction.RECLASSIFY, new_class="MO", reviewer="r"
    )
    assert _summary(world, built.slide_id).differential.counts["MO"] == 1


def test_no_leukocytes_means_no_percentages(world: World) -> None:
    built = world.slide([CellSpec("ART"), CellSpec(None)])
    diff = _summary(world, built.slide_id).differential
    assert diff.leukocytes == 0 and set(diff.percent.values()) == {None}
    assert _summary(world, built.slide_id).flags.pathological == []


def test_cells_filter_by_effective_class_and_review_status(world: World) -> None:
    built = world.slide([CellSpec("SNE"), CellSpec("LY", NEEDS), CellSpec("SNE", NEEDS)])
    review_cell(
        world.engine,
        cell_id=built.cell_ids[2],
        action=ReviewAction.RECLASSIFY,
        new_class="LY",
        reviewer="r",
    )
    by_class = queries.slide_cells(world.engine, slide_id=built.slide_id, cell_class="LY")
    assert [v.cell.id for v in by_class] == built.cell_ids[1:]
    waiting = queries.slide_cells(world.engine, slide_id=built.slide_id, review_status=NEEDS)
    assert [v.cell.id for v in waiting] == [built.cell_ids[1]]


def test_slides_are_listed_with_their_counts(world: World) -> None:
    first = world.slide([CellSpec("SNE", NEEDS), CellSpec(None)], external_id="A")
    second = world.slide([], external_id="B")
    rows = {row.slide.id: row for row in queries.list_slides(world.engine)}
    assert (
        rows[first.slide_id].cells,
        rows[first.slide_id].needs_review,
        rows[first.slide_id].pending,
    ) == (
        2,
        1,
        1,
    )
    assert rows[second.slide_id].cells == 0


def test_unknown_ids_are_not_found(world: World) -> None:
    with pytest.raises(NotFound):
        _summary(world, "00000000-0000-0000-0000-000000000000")
    with pytest.raises(NotFound), Session(world.engine) as session:
        queries.load_cell_view(session, "nope")
