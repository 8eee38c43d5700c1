"""Review states of a cell and the actions a reviewer takes."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["ReviewAction", "ReviewStatus", "status_of"]


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


_STATUS_OF_ACTION = {
    ReviewAction.CONFIRM: ReviewStatus.CONFIRMED,
    ReviewAction.RECLASSIFY: ReviewStatus.RECLASSIFIED,
    ReviewAction.POOR_QUALITY: ReviewStatus.POOR_QUALITY,
}


def status_of(action: ReviewAction | str) -> ReviewStatus:
    """The review status a review action leaves the cell in."""
    return _STATUS_OF_ACTION[ReviewAction(action)]
