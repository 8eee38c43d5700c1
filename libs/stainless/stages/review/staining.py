"""The staining confidence of a slide's cells, summarised per δ variant.

A slide's cells are usually stained by one model, but a promotion during the slide leaves
cells of two; each δ is only comparable with δ of its own variant, so the summary is per
variant (with the model versions that computed it), never pooled.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from statistics import median

from stainless.core.db.cells import CellView

UNNAMED = "unnamed"
"""The variant of predictions stored before variants were recorded."""


@dataclass(frozen=True)
class StainingConfidence:
    variant: str
    model_versions: tuple[str, ...]
    cells: int
    median_delta: float
    lowest_delta: float


def staining_confidence(views: Iterable[CellView]) -> tuple[StainingConfidence, ...]:
    """Per δ variant (sorted by name): the cells with a δ, its median and its lowest value."""
    deltas: dict[str, list[float]] = defaultdict(list)
    models: dict[str, set[str]] = defaultdict(set)
    for view in views:
        prediction = view.prediction
        if prediction is None or prediction.confidence is None:
            continue
        variant = prediction.confidence_variant or UNNAMED
        deltas[variant].append(prediction.confidence)
        models[variant].add(prediction.model_version)
    return tuple(
        StainingConfidence(
            variant=variant,
            model_versions=tuple(sorted(models[variant])),
            cells=len(values),
            median_delta=float(median(values)),
            lowest_delta=float(min(values)),
        )
        for variant, values in sorted(deltas.items())
    )
