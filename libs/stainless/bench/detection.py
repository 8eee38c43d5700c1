"""Detection benchmark: classical white-cell detectors on phantom fields, at IoU 0.5.

Field ``i`` is ``generate_field`` with the generator of ``field_rng(seed, 0, i)``. The
brightfield detector is scored against ``cells[*].box_bf``, the DIC detector against
``cells[*].box_dic``, each matched greedily by IoU (``match_boxes``). Every phantom cell
counts (artifacts, smudges and cells cut by the field edge included); a cell whose
brightfield box is empty (it lies outside the brightfield field) is left out of the
brightfield score only.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from stainless.domain.statistics import wilson_interval
from stainless.imaging.detection import (
    BrightfieldDetector,
    Detection,
    DicDetector,
    box_iou,
    match_boxes,
)
from stainless.imaging.phantom import generate_field
from stainless.imaging.phantom_set import field_rng, phantom_config

Progress = Callable[[], None]


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 1.0


def detection_metrics(bf: Counter[str], dic: Counter[str]) -> dict[str, Any]:
    """Precision, recall (each with its 95% Wilson interval, ``*_ci``) and counts of both
    modalities from their tp/fp/fn counters."""
    metrics: dict[str, Any] = {}
    for modality, counts in (("bf", bf), ("dic", dic)):
        tp = counts["tp"]
        for name, total in (("precision", tp + counts["fp"]), ("recall", tp + counts["fn"])):
            metrics[f"{modality}_{name}"] = _ratio(tp, total)
            metrics[f"{modality}_{name}_ci"] = [round(v, 4) for v in wilson_interval(tp, total)]
        metrics[f"{modality}_counts"] = {"tp": tp, "fp": counts["fp"], "fn": counts["fn"]}
    return metrics


def _missed(
    found: list[Detection], truth: list[tuple[int, int, int, int]], iou: float
) -> list[int]:
    """Indices of truth boxes no detection overlaps by ``iou`` (for per-class counts)."""
    return [j for j, box in enumerate(truth) if all(box_iou(d.box, box) < iou for d in found)]


def run_detection_bench(
    fields: int = 20,
    seed: int = 0,
    *,
    width: int | None = None,
    height: int | None = None,
    bf_detector: BrightfieldDetector | None = None,
    dic_detector: DicDetector | None = None,
    iou: float = 0.5,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Run both detectors over ``fields`` phantom fields.

    Returns:
        ``bf_precision, bf_recall, dic_precision, dic_recall, fields, cells`` and details
        (true/false positives, misses per class, seconds per field).
    """
    if fields < 1:
        raise ValueError(f"fields must be at least 1, got {fields}")
    config = phantom_config(width=width, height=height)
    bf_detector = bf_detector or BrightfieldDetector()
    dic_detector = dic_detector or DicDetector()
    bf = Counter[str]()
    dic = Counter[str]()
    dic_missed = Counter[str]()
    cells = 0
    bf_seconds = dic_seconds = 0.0
    for index in range(fields):
        field = generate_field(config, field_rng(seed, 0, index))
        cells += len(field.cells)
        started = time.perf_counter()
        found_bf = bf_detector.detect(field.bf)
        bf_seconds += time.perf_counter() - started
        truth_bf = [
            c.box_bf for c in field.cells if c.box_bf[2] > c.box_bf[0] and c.box_bf[3] > c.box_bf[1]
        ]
        tp, fp, fn = match_boxes(found_bf, truth_bf, iou)
        bf.update(tp=tp, fp=fp, fn=fn)
        started = time.perf_counter()
        found_dic = dic_detector.detect(field.dic)
        dic_seconds += time.perf_counter() - started
        truth_dic = [c.box_dic for c in field.cells]
        tp, fp, fn = match_boxes(found_dic, truth_dic, iou)
        dic.update(tp=tp, fp=fp, fn=fn)
        for j in _missed(found_dic, truth_dic, iou):
            dic_missed[str(field.cells[j].cell_class)] += 1
        if progress is not None:
            progress()
    return {
        "fields": fields,
        "cells": cells,
        "width": config.width,
        "height": config.height,
        **detection_metrics(bf, dic),
        "dic_missed_by_class": dict(sorted(dic_missed.items())),
        "bf_s_per_field": bf_seconds / fields,
        "dic_s_per_field": dic_seconds / fields,
        "iou": iou,
        "seed": seed,
    }
