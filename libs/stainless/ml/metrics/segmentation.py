"""Per-class overlap of segmentation masks: Dice and IoU."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def dice_iou(
    predicted: npt.ArrayLike, truth: npt.ArrayLike, *, n_classes: int = 4
) -> dict[int, tuple[float | None, float | None]]:
    """``{class: (dice, iou)}``; ``None`` for a class absent from both masks."""
    p = np.asarray(predicted)
    t = np.asarray(truth)
    if p.shape != t.shape:
        raise ValueError(f"masks differ in shape: {p.shape} vs {t.shape}")
    result: dict[int, tuple[float | None, float | None]] = {}
    for label in range(n_classes):
        a, b = p == label, t == label
        union = int(np.logical_or(a, b).sum())
        if union == 0:
            result[label] = (None, None)
            continue
        overlap = int(np.logical_and(a, b).sum())
        result[label] = (2 * overlap / (int(a.sum()) + int(b.sum())), overlap / union)
    return result
