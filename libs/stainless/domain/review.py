"""Review states of a cell and the actions a reviewer takes."""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol, TypeVar

__all__ = [
    "ReviewAction",
    "ReviewReason",
    "ReviewStatus",
    "review_reasons",
    "standing_reviews",
    "status_of",
]


class _Acted(Protocol):
    @property
    def action(self) -> str: ...


_R = TypeVar("_R", bound=_Acted)


class ReviewStatus(StrEnum):
    PENDING = "pending"
    NEEDS_REVIEW = "needs_review"
    CONFIRMED = "confirmed"
    RECLASSIFIED = "reclassified"
    POOR_QUALITY = "poor_quality"


class ReviewAction(StrEnum):
    CONFIRM = "confirm"
    RECLASSIFY = "reclassify"
    POOR_QUALITY = "poor_quality"
    UNDO = "undo"  # withdraws the cell's latest review that still stands


def standing_reviews(actions: list[_R]) -> list[_R]:
    """The reviews that still stand, oldest first: each undo withdraws the latest one
    before it that still stands (an undo with nothing to withdraw changes nothing)."""
    standing: list[_R] = []
    for review in actions:
        if ReviewAction(review.action) is ReviewAction.UNDO:
            if standing:
                standing.pop()
        else:
            standing.append(review)
    return standing


class ReviewReason(StrEnum):
    """Why a cell was sent to expert review (a cell may have several reasons)."""

    LOW_DELTA = "low-delta"  # δ under the model's review threshold: the stain may be wrong
    UNCERTAIN_CLASS = "uncertain-class"  # the calibrated top class probability is low
    PATHOLOGICAL = "pathological"  # a pathological class is always checked by an expert


def review_reasons(
    *,
    delta: float,
    delta_threshold: float,
    top_probability: float | None,
    probability_threshold: float | None,
    predicted_class: str,
    pathological: frozenset[str],
) -> list[ReviewReason]:
    """The reasons a prediction needs review; empty when it needs none. The probability
    rule applies only where a threshold is given (calibrated probabilities)."""
    reasons = []
    if delta < delta_threshold:
        reasons.append(ReviewReason.LOW_DELTA)
    if (
        probability_threshold is not None
        and top_probability is not None
        and top_probability < probability_threshold
    ):
        reasons.append(ReviewReason.UNCERTAIN_CLASS)
    if predicted_class in pathological:
        reasons.append(ReviewReason.PATHOLOGICAL)
    return reasons


_STATUS_OF_ACTION = {
    ReviewAction.CONFIRM: ReviewStatus.CONFIRMED,
    ReviewAction.RECLASSIFY: ReviewStatus.RECLASSIFIED,
    ReviewAction.POOR_QUALITY: ReviewStatus.POOR_QUALITY,
}


def status_of(action: ReviewAction | str) -> ReviewStatus:
    """The review status a review action leaves the cell in."""
    return _STATUS_OF_ACTION[ReviewAction(action)]
