"""Held-out evaluation of model 3 (thesis ch. 8.3–8.4): image quality and the automatic
classification of artificially stained cells, per class.

The automatic classifier is the model's own AC-GAN head on the critic: it classifies the
(stained, DIC) pair of each held-out cell, or the stained image alone when the model's
head reads only that (``class_head: stained``), as the thesis' automatic classifier
classified the artificially stained cells (Table 8.3, column "Automatic"; there a ResNet
trained on real stained cells). The same head on the real brightfield cells is reported
beside it: a pair of classes confused on the stained cells but told apart on the brightfield ones
is lost on the way from DIC to stain; one confused on both is beyond this classifier.
Given the logits of a classifier of the DIC alone (:mod:`stainless_training.dic_probe`),
each confused pair also says where it is lost: "not in the DIC" when that classifier
confuses the pair too (what "DIC cannot separate" means here, as the thesis found for
blasts and monocytes), "lost by the translator" when it tells them apart. A generator with
a class pathway (``class_condition``) has its own class of each DIC crop, which sets the
colours it paints: ``generator_class_accuracy`` and its confusion.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from stainless.domain.vocabulary import Vocabulary
from stainless.ml.metrics.class_calibration import calibrate_classifier
from stainless.ml.metrics.classification import classification_report
from stainless.ml.metrics.image import mse, ssim
from stainless.ml.models.paired import MultiScaleDiscriminator, PairedGenerator
from stainless_training.phantom_data import CellSample, dic_batch

__all__ = [
    "CONFUSED_SHARE",
    "THESIS_AUTOMATIC_RECALL",
    "confused_pairs",
    "evaluate_paired",
    "located_confusions",
    "per_class_table",
]

THESIS_AUTOMATIC_RECALL: dict[str, float] = {
    "NE": 0.966,
    "EO": 0.935,
    "BA": 0.403,
    "MO": 0.701,
    "LY": 0.774,
    "IG": 0.594,
    "BL": 0.815,
    "ALC": 0.684,
    "ERB": 0.924,
    "SMU": 0.856,
}
"""Thesis Table 8.3, column "Automatic" (a ResNet trained on real stained cells, on 28 000
real test cells of 13 patients; overall 87.2%). No RLY or ART row. Not like for like with a
phantom evaluation of this model's own head: beside it for orientation only."""

CONFUSED_SHARE = 0.2
"""A class pair is confused when at least this share of either class's cells is called the
other."""

F32 = npt.NDArray[np.float32]


def _to_image(batch: Tensor) -> F32:
    return ((batch.permute(0, 2, 3, 1).numpy() + 1) / 2).clip(0, 1).astype(np.float32)


def _probabilities(critic: MultiScaleDiscriminator, image: Tensor, dic: Tensor) -> F32:
    logits = MultiScaleDiscriminator.class_logits(critic(image, dic))
    return torch.softmax(logits, dim=1).numpy().astype(np.float32)


def _stained_logits(
    generator: PairedGenerator,
    critic: MultiScaleDiscriminator,
    samples: Sequence[CellSample],
    *,
    batch: int = 32,
) -> npt.NDArray[np.float32]:
    """The head's class logits on each cell's (stained, DIC) pair."""
    generator, critic = generator.eval(), critic.eval()
    chunks = []
    with torch.no_grad():
        for start in range(0, len(samples), batch):
            dic = dic_batch(samples[start : start + batch])
            logits = MultiScaleDiscriminator.class_logits(critic(generator(dic), dic))
            chunks.append(logits.numpy().astype(np.float32))
    return np.concatenate(chunks)


def confused_pairs(
    confusion: npt.NDArray[np.int64], names: Sequence[str], *, share: float = CONFUSED_SHARE
) -> list[dict[str, Any]]:
    """Class pairs of which at least ``share`` of either class's cells went to the other."""
    rows = confusion.sum(axis=1)
    found = []
    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            ab = confusion[a, b] / rows[a] if rows[a] else 0.0
            ba = confusion[b, a] / rows[b] if rows[b] else 0.0
            if max(ab, ba) >= share:
                found.append(
                    {"classes": [names[a], names[b]], "shares": [round(ab, 3), round(ba, 3)]}
                )
    return found


def _recall(confusion: npt.NDArray[np.int64], index: int) -> float | None:
    of = int(confusion[index].sum())
    return int(confusion[index, index]) / of if of else None


def per_class_table(
    confusion: npt.NDArray[np.int64],
    names: Sequence[str],
    reference: npt.NDArray[np.int64],
    dic_only: npt.NDArray[np.int64] | None = None,
) -> list[dict[str, Any]]:
    """Per class: cells, right, recall, precision (Table 8.4's right/of), the recall on the
    real brightfield (``reference`` is that confusion matrix), the recall of the classifier
    of the DIC alone (``dic_only``, where given) and the thesis' automatic recall where
    Table 8.3 has the class."""
    table = []
    for index, code in enumerate(names):
        of, right = int(confusion[index].sum()), int(confusion[index, index])
        called = int(confusion[:, index].sum())
        row = {
            "class": code,
            "cells": of,
            "right": right,
            "recall": right / of if of else None,
            "precision": right / called if called else None,
            "recall_brightfield": _recall(reference, index),
            "thesis_automatic_recall": THESIS_AUTOMATIC_RECALL.get(code),
        }
        if dic_only is not None:
            row["recall_dic_only"] = _recall(dic_only, index)
        table.append(row)
    return table


def located_confusions(
    stained: npt.NDArray[np.int64],
    brightfield: npt.NDArray[np.int64],
    names: Sequence[str],
    dic_only: npt.NDArray[np.int64] | None = None,
) -> list[dict[str, Any]]:
    """The pairs the stained cells confuse (:func:`confused_pairs`), each with where it is
    lost: ``also_on_brightfield`` (the head confuses the brightfield cells too),
    ``on_dic_only`` (so does the DIC-only classifier; only with ``dic_only``) and ``where``:
    "also on brightfield", "not in the DIC", "lost by the translator", or "lost from DIC"
    when no DIC-only classifier says which of the last two."""
    on_brightfield = {tuple(p["classes"]) for p in confused_pairs(brightfield, names)}
    on_dic = (
        None if dic_only is None else {tuple(p["classes"]) for p in confused_pairs(dic_only, names)}
    )
    located = []
    for pair in confused_pairs(stained, names):
        key = tuple(pair["classes"])
        pair["also_on_brightfield"] = key in on_brightfield
        if pair["also_on_brightfield"]:
            pair["where"] = "also on brightfield"
        elif on_dic is None:
            pair["where"] = "lost from DIC"
        else:
            pair["where"] = "not in the DIC" if key in on_dic else "lost by the translator"
        if on_dic is not None:
            pair["on_dic_only"] = key in on_dic
        located.append(pair)
    return located


def evaluate_paired(
    generator: PairedGenerator,
    critic: MultiScaleDiscriminator,
    samples: list[CellSample],
    *,
    vocabulary: Vocabulary,
    batch: int = 32,
    per_cell: bool = False,
    calibration_cells: Sequence[CellSample] = (),
    dic_only_logits: npt.NDArray[np.float32] | None = None,
) -> dict[str, Any]:
    """Metrics of model 3 on held-out ``samples`` (a dict ready for metrics.json).

    ``calibration_cells``, held out from these, calibrate the head's class probabilities on
    the stained pairs (``probability_calibration``, as for model 1). ``dic_only_logits``,
    one row per sample, are a DIC-only classifier's: its accuracy, confusion and recall per
    class go beside the head's, and each confused pair says where it is lost."""
    if dic_only_logits is not None and len(dic_only_logits) != len(samples):
        raise ValueError(f"{len(dic_only_logits)} DIC-only logits for {len(samples)} cells")
    if not samples:
        raise ValueError("nothing to evaluate")
    generator, critic = generator.eval(), critic.eval()
    names = list(vocabulary.classes)
    stained_p: list[F32] = []
    brightfield_p: list[F32] = []
    own_logits: list[Tensor] = []
    rows: list[dict[str, Any]] = []
    with torch.no_grad():
        for start in range(0, len(samples), batch):
            chosen = samples[start : start + batch]
            dic = dic_batch(chosen)
            bf = torch.from_numpy(
                np.stack([np.ascontiguousarray(s.bf.transpose(2, 0, 1)) for s in chosen]) * 2 - 1
            )
            stained, own = generator.stain(dic)
            own_logits.append(own)
            stained_p.append(_probabilities(critic, stained, dic))
            brightfield_p.append(_probabilities(critic, bf, dic))
            for sample, image in zip(chosen, _to_image(stained), strict=True):
                rows.append(
                    {
                        "class": names[sample.label],
                        "mse": mse(image, sample.bf),
                        "ssim": ssim(image, sample.bf),
                    }
                )
    labels = [s.label for s in samples]
    probabilities, reference_p = np.concatenate(stained_p), np.concatenate(brightfield_p)
    for row, p in zip(rows, probabilities, strict=True):
        row["predicted"] = names[int(p.argmax())]
    report = classification_report(labels, probabilities, class_names=names)
    reference = classification_report(labels, reference_p, class_names=names)
    confusion = np.asarray(report.confusion, dtype=np.int64)
    reference_confusion = np.asarray(reference.confusion, dtype=np.int64)
    dic_only = dic_only_confusion = None
    if dic_only_logits is not None:
        dic_only = classification_report(
            labels, torch.softmax(torch.from_numpy(dic_only_logits), 1).numpy(), class_names=names
        )
        dic_only_confusion = np.asarray(dic_only.confusion, dtype=np.int64)
    on_stained = located_confusions(confusion, reference_confusion, names, dic_only_confusion)
    quality = {
        code: {
            measure: float(np.mean([r[measure] for r in rows if r["class"] == code]))
            for measure in ("mse", "ssim")
        }
        for code in names
        if any(r["class"] == code for r in rows)
    }
    result: dict[str, Any] = {
        "model": "paired",
        "vocabulary": vocabulary.name,
        "class_names": names,
        "cells": len(samples),
        "accuracy": report.accuracy,
        "macro_f1": report.macro_f1,
        "confusion": report.confusion,
        "per_class": per_class_table(confusion, names, reference_confusion, dic_only_confusion),
        "brightfield_accuracy": reference.accuracy,
        "brightfield_confusion": reference.confusion,
        "confused_on_stained": on_stained,
        "lost_from_dic": [p["classes"] for p in on_stained if not p["also_on_brightfield"]],
        "mse": float(np.mean([r["mse"] for r in rows])),
        "ssim": float(np.mean([r["ssim"] for r in rows])),
        "quality_per_class": quality,
        "classifier": (
            "the model's AC-GAN head on the stained image alone"
            if critic.image_classifier is not None
            else "the model's AC-GAN head on the (stained, DIC) pair"
        ),
        "thesis_comparison": "Table 8.3's automatic column: a ResNet on real stained cells of "
        "patients; this is the model's own head on phantom cells, not like for like",
    }
    if generator.class_encoder is not None:
        own_report = classification_report(
            labels, torch.softmax(torch.cat(own_logits), 1).numpy(), class_names=names
        )
        result["generator_class_accuracy"] = own_report.accuracy
        result["generator_class_confusion"] = own_report.confusion
    if dic_only is not None:
        result["dic_only_accuracy"] = dic_only.accuracy
        result["dic_only_macro_f1"] = dic_only.macro_f1
        result["dic_only_confusion"] = dic_only.confusion
        result["not_in_dic"] = [p["classes"] for p in on_stained if p["where"] == "not in the DIC"]
    if calibration_cells:
        logits = _stained_logits(generator, critic, calibration_cells, batch=batch)
        labels = [s.label for s in calibration_cells]
        result["probability_calibration"] = calibrate_classifier(logits, labels).as_dict()
    if per_cell:
        result["per_cell"] = rows
    return result
