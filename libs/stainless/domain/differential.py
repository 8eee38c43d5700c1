"""The white-cell differential of a slide and its flags.

A cell enters as its *effective class* (a reviewer's reclassification, else the
prediction; ``None`` while no prediction exists: *pending*) and its review status. A
cell marked poor quality is left out of the differential.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from stainless.domain.cells import CLASS_ORDER, LEUKOCYTES
from stainless.domain.review import ReviewStatus

__all__ = ["Differential", "Flags", "ReviewedCell", "differential", "flags"]


class ReviewedCell(Protocol):
    """What the differential needs of a cell."""

    @property
    def effective_class(self) -> str | None: ...

    @property
    def review_status(self) -> ReviewStatus: ...


@dataclass(frozen=True)
class Differential:
    """Counts per class and percentages over the leukocytes.

    ``counts`` holds every class (zeros included; a class code unknown to
    :class:`~stainless.domain.cells.CellClass` is counted too). ``percent`` holds only
    the leukocyte classes BA, EO, LY, MO and SNE, over their sum: artifacts (ART) and
    smudge cells (SMU) are counted but are not leukocytes that can be differentiated, so
    they are not in the denominator. ``percent`` values are ``None`` when no leukocyte
    was counted.
    """

    counts: dict[str, int]
    percent: dict[str, float | None]
    leukocytes: int
    counted: int
    poor_quality: int
    pending: int
    needs_review: int

    @property
    def total(self) -> int:
        return self.counted + self.poor_quality + self.pending


@dataclass(frozen=True)
class Flags:
    pathological: list[str] = field(default_factory=list)
    needs_review: int = 0
    pending: int = 0


def differential(cells: Iterable[ReviewedCell]) -> Differential:
    """The differential of a slide's cells."""
    counts: Counter[str] = Counter(dict.fromkeys(CLASS_ORDER, 0))
    poor = pending = needs_review = counted = 0
    for cell in cells:
        if cell.review_status is ReviewStatus.NEEDS_REVIEW:
            needs_review += 1
        if cell.effective_class is None:
            pending += 1
        elif cell.review_status is ReviewStatus.POOR_QUALITY:
            poor += 1
        else:
            counts[cell.effective_class] += 1
            counted += 1
    leukocytes = sum(counts[code] for code in LEUKOCYTES)
    percent: dict[str, float | None] = {
        code: (round(100.0 * counts[code] / leukocytes, 1) if leukocytes else None)
        for code in LEUKOCYTES
    }
    return Differential(
        counts=dict(counts),
        percent=percent,
        leukocytes=leukocytes,
        counted=counted,
        poor_quality=poor,
        pending=pending,
        needs_review=needs_review,
    )


def flags(diff: Differential, *, pathological_classes: Iterable[str]) -> Flags:
    """A flag per pathological class present, and the cells awaiting review or a class."""
    present = [code for code in pathological_classes if diff.counts.get(code, 0) > 0]
    return Flags(pathological=present, needs_review=diff.needs_review, pending=diff.pending)
