"""Cells with their effective class: what review and retraining both read.

The effective class of a cell is the ``new_class`` of its latest ``reclassify`` review if
it has one, else the ``predicted_class`` of its latest prediction. A cell without a
prediction is *pending*; its review status is that of its latest review, else its
prediction's. Reviews withdrawn by an ``undo`` count as never made.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from sqlmodel import Session, col, select

from stainless.core.db.models import Cell, Prediction, Review
from stainless.domain.review import ReviewAction, ReviewStatus, standing_reviews, status_of

__all__ = ["CellView", "cell_views", "resolve", "sorted_rows"]


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


_Row = TypeVar("_Row", Prediction, Review)


def sorted_rows(rows: Sequence[_Row]) -> list[_Row]:
    """Oldest first (creation time, then id)."""
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
    for prediction in sorted_rows(session.exec(predictions_query).all()):
        predictions[prediction.cell_id] = prediction
    reviews: dict[str, list[Review]] = {}
    for review in sorted_rows(session.exec(reviews_query).all()):
        reviews.setdefault(review.cell_id, []).append(review)
    return [resolve(cell, predictions.get(cell.id), reviews.get(cell.id, [])) for cell in cells]


def resolve(cell: Cell, prediction: Prediction | None, reviews: list[Review]) -> CellView:
    """The cell's view from its latest prediction and its reviews, oldest first (an undo
    withdraws the latest review still standing)."""
    standing = standing_reviews(reviews)
    latest = standing[-1] if standing else None
    if prediction is None:
        return CellView(cell, None, latest, None, ReviewStatus.PENDING)
    reclassified = [r for r in standing if r.action == ReviewAction.RECLASSIFY and r.new_class]
    effective = reclassified[-1].new_class if reclassified else prediction.predicted_class
    status = status_of(latest.action) if latest else ReviewStatus(prediction.review_status)
    return CellView(cell, prediction, latest, effective, status)
