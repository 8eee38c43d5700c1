"""Classification and agreement metrics: accuracy, macro-F1, OvR AUC, confusion, Pearson r."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from sklearn.metrics import (  # type: ignore[import-untyped]
    accuracy_score,
    confusion_matrix,
    f1_score,
    roc_auc_score,
)


@dataclass(frozen=True)
class ClassificationReport:
    accuracy: float
    macro_f1: float
    auc_ovr: float | None  # None when a class has no positive or no negative sample
    confusion: list[list[int]]
    per_class_f1: dict[str, float]


def classification_report(
    labels: Sequence[int],
    probabilities: npt.ArrayLike,
    *,
    class_names: Sequence[str],
) -> ClassificationReport:
    """Metrics of predictions ``argmax(probabilities)`` against ``labels``.

    Args:
        labels: true class indices, one per sample.
        probabilities: N x C class probabilities (rows sum to 1).
        class_names: the C class names, in index order.
    """
    y = np.asarray(labels, dtype=np.int64)
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 2 or p.shape != (y.size, len(class_names)):
        raise ValueError(f"probabilities must be {y.size}x{len(class_names)}, got {p.shape}")
    predicted = p.argmax(axis=1)
    indices = list(range(len(class_names)))
    present = np.unique(y)
    auc: float | None = None
    if present.size == len(class_names):
        auc = float(roc_auc_score(y, p, multi_class="ovr", labels=indices))
    per_class = f1_score(y, predicted, labels=indices, average=None, zero_division=0)
    return ClassificationReport(
        accuracy=float(accuracy_score(y, predicted)),
        macro_f1=float(f1_score(y, predicted, labels=present, average="macro", zero_division=0)),
        auc_ovr=auc,
        confusion=confusion_matrix(y, predicted, labels=indices).tolist(),
        per_class_f1={name: float(v) for name, v in zip(class_names, per_class, strict=True)},
    )
