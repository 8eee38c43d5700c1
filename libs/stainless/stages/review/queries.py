"""Read side: effective classes, the WBC differential and the flags of a slide.

The effective class of a cell is the ``new_class`` of its latest ``reclassify``
review if it has one, else the ``predicted_class`` of its latest prediction. A
cell whose latest review is ``poor_quality`` is left out of the differential; a
cell without a prediction is *pending* and counted apart.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from stainless.core.db.models import Cell, Prediction, Review, Slide
from stainless.domain.differential import Differential, Flags, differential, flags
from stainless.domain.review import ReviewAction, ReviewStatus, status_of
from stainless.stages.review.errors import NotFound


@dataclass(frozen=True)
class CellView:
    """A cell with its latest prediction and reviews resolved."""

    cell: Cell
    prediction: Prediction | None
    latest_review: Review | None
    effective_class: str | None
    review_status: ReviewStatus

    @property
    def counted(self) -> bool:
        """In the differential: classified and not marked poor quality."""
        return self.effective_class is not None and self.review_status is not (
            ReviewStatus.POOR_QUALITY
        )


@dataclass(frozen=True)
class SlideSummary:
    slide: Slide
    differential: Differential
    flags: Flags


_Row = TypeVar("_Row", Prediction, Review)


def _sorted_rows(rows: Sequence[_Row]) -> list[_Row]:
    return sorted(rows, key=lambda row: (row.created_at, row.id))


def cell_views(session: Session, *, slide_id: str | None = None) -> list[CellView]:
    """Every cell of the slide (or of every slide) with its effective class, in field order."""
    cells_query = select(Cell)
    predictions_query = select(Prediction).join(Cell, col(Cell.id) == col(Prediction.cell_id))
    reviews_query = select(Review).join(Cell, col(Cell.id) == col(Review.cell_id))
    if slide_id is not None:
        cells_query = cells_query.where(Cell.slide_id == slide_id)
        predictions_query = predictions_query.where(Cell.slide_id == slide_id)
        reviews_query = reviews_query.where(Cell.slide_id == slide_id)
    cells = session.exec(
        cells_query.order_by(col(Cell.slide_id), col(Cell.field_index), col(Cell.index))
    ).all()
    predictions: dict[str, Prediction] = {}
    for prediction in _sorted_rows(session.exec(predictions_query).all()):
        predictions[prediction.cell_id] = prediction
    reviews: dict[str, list[Review]] = {}
    for review in _sorted_rows(session.exec(reviews_query).all()):
        reviews.setdefault(review.cell_id, []).append(review)
    return [_view(cell, predictions.get(cell.id), reviews.get(cell.id, [])) for cell in cells]


def _view(cell: Cell, prediction: Prediction | None, reviews: list[Review]) -> CellView:
    latest = reviews[-1] if reviews else None
    if prediction is None:
        return CellView(cell, None, latest, None, ReviewStatus.PENDING)
    reclassified = [r for r in reviews if r.action == ReviewAction.RECLASSIFY and r.new_class]
    effective = reclassified[-1].new_class if reclassified else prediction.predicted_class
    status = status_of(latest.action) if latest else ReviewStatus(prediction.review_status)
    return CellView(cell, prediction, latest, effective, status)


def get_slide(session: Session, slide_id: str) -> Slide:
    slide = session.get(Slide, slide_id)
    if slide is None:
        raise NotFound(f"no slide {slide_id}")
    return slide


def slide_summary(
    engine: Engine, *, slide_id: str, pathological_classes: Iterable[str]
) -> SlideSummary:
    """The slide, its differential and its flags; :class:`NotFound` for an unknown id."""
    with Session(engine) as session:
        slide = get_slide(session, slide_id)
        diff = differential(cell_views(session, slide_id=slide_id))
    return SlideSummary(slide, diff, flags(diff, pathological_classes=pathological_classes))


@dataclass(frozen=True)
class SlideRow:
    slide: Slide
    cells: int
    needs_review: int
    pending: int


def list_slides(engine: Engine) -> list[SlideRow]:
    """Every slide, newest first, with its cell counts."""
    with Session(engine) as session:
        slides = session.exec(
            select(Slide).order_by(col(Slide.created_at).desc(), col(Slide.id))
        ).all()
        by_slide: dict[str, list[CellView]] = {}
        for view in cell_views(session):
            by_slide.setdefault(view.cell.slide_id, []).append(view)
    rows = []
    for slide in slides:
        views = by_slide.get(slide.id, [])
        rows.append(
            SlideRow(
                slide=slide,
                cells=len(views),
                needs_review=sum(v.review_status is ReviewStatus.NEEDS_REVIEW for v in views),
                pending=sum(v.effective_class is None for v in views),
            )
        )
    return rows


def slide_cells(
    engine: Engine,
    *,
    slide_id: str,
    cell_class: str | None = None,
    review_status: ReviewStatus | None = None,
) -> list[CellView]:
    """The slide's cells, optionally only those of one effective class or review status."""
    with Session(engine) as session:
        get_slide(session, slide_id)
        views = cell_views(session, slide_id=slide_id)
    return [
        view
        for view in views
        if (cell_class is None or view.effective_class == cell_class)
        and (review_status is None or view.review_status is review_status)
    ]


def cell_view(engine: Engine, *, cell_id: str) -> CellView:
    """One cell with its latest prediction; :class:`NotFound` for an unknown id."""
    with Session(engine) as session:
        return load_cell_view(session, cell_id)


def load_cell_view(session: Session, cell_id: str) -> CellView:
    cell = session.get(Cell, cell_id)
    if cell is None:
        raise NotFound(f"no cell {cell_id}")
    predictions = session.exec(select(Prediction).where(Prediction.cell_id == cell_id)).all()
    reviews = session.exec(select(Review).where(Review.cell_id == cell_id)).all()
    ordered = _sorted_rows(predictions)
    return _view(cell, ordered[-1] if ordered else None, _sorted_rows(reviews))
