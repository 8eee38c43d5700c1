"""How raters' labels agree with a reference and with each other (thesis Tables 8.3–8.6).

A rater (an expert in a blinded study, or the automatic classifier) gives each cell a class
or ``PQ``, "poor quality": the stained image cannot be classified. The confusion matrix
has the reference classes as rows and the rater's classes plus ``PQ`` as columns; a
``PQ`` label counts as wrong in accuracy and recall.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sklearn.metrics import (  # type: ignore[import-untyped]
    accuracy_score,
    cohen_kappa_score,
    f1_score,
)

from stainless.domain.study import POOR_QUALITY

__all__ = [
    "POOR_QUALITY",
    "RaterSummary",
    "cohen_kappa",
    "confusion_matrix",
    "rater_summary",
]


def _paired(first: Sequence[str], second: Sequence[str]) -> None:
    if len(first) != len(second):
        raise ValueError(
            f"need one label per cell from each side, got {len(first)} and {len(second)}"
        )
    if not first:
        raise ValueError("no cells to compare")


def confusion_matrix(
    reference: Sequence[str], labels: Sequence[str], classes: Sequence[str]
) -> dict[str, dict[str, int]]:
    """Counts ``[reference class][label]`` over ``classes`` (rows and columns) plus a
    ``PQ`` column; a class outside ``classes`` on either side is an error."""
    _paired(reference, labels)
    columns = [*classes, POOR_QUALITY]
    unknown = (set(reference) - set(classes)) | (set(labels) - set(columns))
    if unknown:
        raise ValueError(f"classes outside the study's: {sorted(unknown)}")
    matrix = {row: dict.fromkeys(columns, 0) for row in classes}
    for truth, label in zip(reference, labels, strict=True):
        matrix[truth][label] += 1
    return matrix


def cohen_kappa(first: Sequence[str], second: Sequence[str]) -> float:
    """Cohen's κ of two raters' labels of the same cells (``PQ`` is a category like any
    other); 1.0 when both give every cell the same one class."""
    _paired(first, second)
    if len(set(first) | set(second)) == 1:
        return 1.0
    return float(cohen_kappa_score(first, second))


@dataclass(frozen=True)
class RaterSummary:
    """One rater against the reference: overall accuracy, macro-F1 over the classes
    present in the reference, per-class recall (Table 8.3) and the share marked ``PQ``."""

    cells: int
    accuracy: float
    macro_f1: float
    recall: dict[str, float | None]
    correct: dict[str, tuple[int, int]]  # class: (right, of) as in Table 8.4
    poor_quality: float


def rater_summary(
    reference: Sequence[str], labels: Sequence[str], classes: Sequence[str]
) -> RaterSummary:
    matrix = confusion_matrix(reference, labels, classes)
    present = [code for code in classes if code in set(reference)]
    correct = {code: (matrix[code][code], sum(matrix[code].values())) for code in classes}
    return RaterSummary(
        cells=len(reference),
        accuracy=float(accuracy_score(reference, labels)),
        macro_f1=float(
            f1_score(reference, labels, labels=present, average="macro", zero_division=0)
        ),
        recall={code: (hit / of if of else None) for code, (hit, of) in correct.items()},
        correct=correct,
        poor_quality=sum(label == POOR_QUALITY for label in labels) / len(labels),
    )
