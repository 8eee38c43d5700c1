"""Evaluation of model 1 on held-out phantom cells: image quality, classification,
segmentation, confidence.

Image quality (MSE/RMSE, SSIM, LPIPS, FID) is measured against the registered
brightfield crop and compared with a baseline that keeps the DIC image and transfers
colour: each brightfield channel as a linear function of DIC intensity, fitted by least
squares on the training cells. Dice/IoU score the segmentation head against the cells'
masks. The confidence (the chapter-7 whole-latent variant, model 1's) is scored by
``confidence_correlations``: for δ (raw MI), δ normalised and γ against each quality
measure (LPIPS, MSE, SSIM against the ground truth), n, Pearson and Spearman r with
bootstrap 95% intervals and the partial r controlling for the white cell's area (δ tracks
it); and by the calibrated review threshold.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from stainless.domain.cells import MaskClass
from stainless.domain.served import ConfidenceVariant
from stainless.ml.confidence.adapters import StainingLatentModel, predicted_foreground
from stainless.ml.confidence.mutual_information import ChannelMode
from stainless.ml.confidence.noise import (
    WHOLE_LATENT,
    ConfidenceResult,
    whole_latent_confidence,
)
from stainless.ml.metrics.calibration import fit_calibration, reliability, review_threshold_for
from stainless.ml.metrics.class_calibration import calibrate_classifier, softmax
from stainless.ml.metrics.classification import classification_report
from stainless.ml.metrics.correlation import correlation_summary, pearson_r
from stainless.ml.metrics.fid import FidMetric
from stainless.ml.metrics.image import mse, ssim
from stainless.ml.metrics.perceptual import PerceptualMetric
from stainless.ml.metrics.segmentation import dice_iou
from stainless.ml.models.mtmd import MultiTaskTranslator
from stainless_training.phantom_data import CLASSES, CellSample

F32 = npt.NDArray[np.float32]
MASK_CLASSES: tuple[str, ...] = tuple(m.name.lower() for m in MaskClass)
CONFIDENCE_SCORES = ("delta", "delta_normalised", "gamma")
QUALITY_MEASURES = ("lpips", "mse", "ssim")
MEANS = (
    "mse",
    "ssim",
    "baseline_mse",
    "baseline_ssim",
    "lpips",
    "delta",
    "delta_normalised",
    "gamma",
)


TRAINED_DOMAINS = ("DIC", "BF", "CV")
"""Model 1's domains by name (``Domain``); ``domain_accuracy`` names CV cells ``CV``."""


@dataclass(frozen=True)
class ColourTransfer:
    """``bf_c ≈ a_c · dic + b_c`` per channel, fitted on training cells (the baseline)."""

    slope: npt.NDArray[np.float64]
    intercept: npt.NDArray[np.float64]

    @classmethod
    def fit(cls, samples: list[CellSample]) -> ColourTransfer:
        if not samples:
            raise ValueError("the colour transfer needs training samples")
        dic = np.concatenate([s.dic.ravel() for s in samples]).astype(np.float64)
        bf = np.concatenate([s.bf.reshape(-1, 3) for s in samples]).astype(np.float64)
        design = np.stack([dic, np.ones_like(dic)], axis=1)
        solution, *_ = np.linalg.lstsq(design, bf, rcond=None)
        return cls(slope=solution[0], intercept=solution[1])

    def __call__(self, dic: F32) -> F32:
        image = dic[..., None] * self.slope + self.intercept
        return np.clip(image, 0, 1).astype(np.float32)


Confidence = Callable[[Tensor, int], ConfidenceResult]
"""One DIC cell ``[1, 1, S, S]`` in [-1, 1] and a seed in, its confidence result out: the
clean stained output and its δ, γ and heat map by one variant on one translator."""


def whole_latent(translator: MultiTaskTranslator, *, k: int = 10, alpha: float = 3.0) -> Confidence:
    """Model 1's chapter-7 confidence: noise on the whole latent, masked to the white cell
    as the model's own segmenter sees it, drawn from a generator seeded per call."""
    model = StainingLatentModel(translator.eval())

    def run(x: Tensor, seed: int) -> ConfidenceResult:
        return whole_latent_confidence(
            model,
            x,
            k=k,
            alpha=alpha,
            foreground=lambda h: predicted_foreground(translator, h),
            generator=torch.Generator().manual_seed(seed),
        )

    return run


def stained_image(result: ConfidenceResult) -> F32:
    """The clean stained output as an ``[S, S, 3]`` image in [0, 1]."""
    return ((result.clean[0].permute(1, 2, 0).numpy() + 1) / 2).clip(0, 1).astype(np.float32)


def evaluate(
    translator: MultiTaskTranslator,
    samples: list[CellSample],
    *,
    baseline: ColourTransfer,
    perceptual: PerceptualMetric,
    k: int = 10,
    alpha: float = 3.0,
    seed: int = 0,
    review_fraction: float = 0.2,
    acceptable_ssim: float = 0.75,
    review_sensitivity: float = 0.9,
    fid: FidMetric | None = None,
    per_cell: bool = False,
    other_domains: Mapping[str, list[CellSample]] | None = None,
    labelled: Collection[str] = TRAINED_DOMAINS,
    calibration_cells: list[CellSample] | None = None,
) -> dict[str, Any]:
    """Metrics of ``translator`` on held-out ``samples`` (a dict ready for metrics.json).

    A stained cell is acceptable when its SSIM against the registered brightfield reaches
    ``acceptable_ssim``. ``calibration`` maps δ to the probability that a cell is acceptable
    (isotonic regression on these cells, with its reliability table), and
    ``review_threshold`` sends ``review_sensitivity`` of the unacceptable cells to review
    (``review`` says what share of all cells that costs); when every cell is acceptable it
    falls back to the δ quantile ``review_fraction``. ``fid`` is the FID
    feature network (default: a random-initialised AlexNet, said so in ``fid_provenance``).
    ``per_cell`` adds a row per cell (class, prediction, δ, γ, LPIPS, MSE, SSIM, Dice).
    ``rmse`` is the root of the mean squared error over every pixel of every cell.
    ``domain_accuracy`` classifies the cells from each input domain (:func:`domain_accuracy`,
    with the brightfield cells of ``other_domains``). ``calibration_cells``, held out from
    these, calibrate the class probabilities (``probability_calibration``); the exporter
    serves that calibration.
    """
    if not samples:
        raise ValueError("nothing to evaluate")
    if not 0 < review_fraction < 1:
        raise ValueError(f"review_fraction must be in (0, 1), got {review_fraction}")
    translator = translator.eval()
    confidence_of = whole_latent(translator, k=k, alpha=alpha)
    rows: list[dict[str, Any]] = []
    probabilities = []
    stained_images: list[F32] = []
    baseline_images: list[F32] = []
    with torch.no_grad():
        for index, sample in enumerate(samples):
            confidence = confidence_of(
                torch.from_numpy(sample.dic[None, None] * 2 - 1), seed + index
            )
            stained, plain = stained_image(confidence), baseline(sample.dic)
            stained_images.append(stained)
            baseline_images.append(plain)
            h = confidence.latent
            p = torch.softmax(translator.classify(h), dim=1)[0].numpy()
            probabilities.append(p)
            mask = translator.segment(h).argmax(dim=1)[0].numpy()
            overlap = dice_iou(mask, sample.mask, n_classes=len(MASK_CLASSES))
            rows.append(
                {
                    "class": str(CLASSES[sample.label]),
                    "predicted": str(CLASSES[int(p.argmax())]),
                    **staining_row(sample, stained, plain, confidence, perceptual),
                    "dice": {MASK_CLASSES[c]: d for c, (d, _) in overlap.items()},
                    "iou": {MASK_CLASSES[c]: i for c, (_, i) in overlap.items()},
                }
            )
    names = [str(c) for c in CLASSES]
    report = classification_report(
        [s.label for s in samples], np.stack(probabilities), class_names=names
    )
    dice_per_class = _overlap_means(rows, "dice")
    iou_per_class = _overlap_means(rows, "iou")
    by_domain = domain_accuracy(translator, samples, other_domains)
    result: dict[str, Any] = {
        **staining_summary(
            rows,
            samples,
            stained_images,
            baseline_images,
            perceptual=perceptual,
            fid=fid,
            variant=WHOLE_LATENT,
            seed=seed,
            review_fraction=review_fraction,
            acceptable_ssim=acceptable_ssim,
            review_sensitivity=review_sensitivity,
        ),
        "accuracy": report.accuracy,
        "macro_f1": report.macro_f1,
        "auc_ovr": report.auc_ovr,
        "class_names": names,
        "confusion": report.confusion,
        "mask_classes": list(MASK_CLASSES),
        "dice_per_class": dice_per_class,
        "dice_mean": _mean_present(dice_per_class),
        "iou_per_class": iou_per_class,
        "iou_mean": _mean_present(iou_per_class),
        "per_class": _per_class(rows, np.asarray(report.confusion), names),
        "domain_accuracy": by_domain,
        "label_transfer": label_transfer(by_domain, labelled),
    }
    if calibration_cells:
        result["probability_calibration"] = probability_calibration(translator, calibration_cells)
    if per_cell:
        result["per_cell"] = rows
    return result


def label_transfer(
    by_domain: Mapping[str, Mapping[str, Any]], labelled: Collection[str]
) -> dict[str, Any] | None:
    """How far classification carries from the labelled domains to the unlabelled ones the
    model trained on (thesis ch. 5.2, Table 5.5): each unlabelled domain's accuracy in
    points below the mean accuracy of the labelled ones. None when every trained domain
    evaluated was labelled (no transfer to measure)."""
    evaluated = [d for d in TRAINED_DOMAINS if d in by_domain]
    unlabelled = [d for d in evaluated if d not in labelled]
    reference = [float(by_domain[d]["accuracy"]) for d in evaluated if d in labelled]
    if not unlabelled or not reference:
        return None
    accuracy = float(np.mean(reference))
    below = {d: 100 * (accuracy - float(by_domain[d]["accuracy"])) for d in unlabelled}
    return {
        "labelled": [d for d in evaluated if d in labelled],
        "labelled_accuracy": accuracy,
        "points_below": below,
        "worst_points_below": max(below.values()),
    }


def _logits(translator: MultiTaskTranslator, images: Tensor, batch: int = 64) -> npt.NDArray[Any]:
    """Class logits of ``images`` ``[N, C, S, S]`` in [-1, 1] (C replicated to the
    translator's channels when 1), from the domain-agnostic classifier on the latent."""
    if images.shape[1] == 1:
        images = images.expand(-1, translator.in_channels, -1, -1)
    with torch.no_grad():
        chunks = [
            translator.classify(translator.encode(images[i : i + batch]))
            for i in range(0, images.shape[0], batch)
        ]
    return torch.cat(chunks).numpy()


def probability_calibration(
    translator: MultiTaskTranslator, samples: list[CellSample]
) -> dict[str, Any]:
    """The calibration of the class probabilities served from the DIC crops of
    ``samples`` (:func:`~stainless.ml.metrics.class_calibration.calibrate_classifier`)."""
    dic = torch.from_numpy(np.stack([s.dic for s in samples])[:, None] * 2 - 1)
    logits = _logits(translator.eval(), dic)
    return calibrate_classifier(logits, [s.label for s in samples]).as_dict()


def domain_accuracy(
    translator: MultiTaskTranslator,
    samples: list[CellSample],
    others: Mapping[str, list[CellSample]] | None = None,
) -> dict[str, dict[str, Any]]:
    """Classification of the same cells from each input domain (thesis Table 5.x): the DIC
    crops (``DIC``), their registered brightfield crops (``BF``), and the brightfield crops
    of each further domain in ``others`` (e.g. another stain protocol, a domain the model
    may never have seen). Per domain: cells, accuracy and macro-F1."""
    names = [str(c) for c in CLASSES]

    def scored(images: Tensor, chosen: list[CellSample]) -> dict[str, Any]:
        report = classification_report(
            [s.label for s in chosen], softmax(_logits(translator, images)), class_names=names
        )
        return {"cells": len(chosen), "accuracy": report.accuracy, "macro_f1": report.macro_f1}

    def brightfield(chosen: list[CellSample]) -> Tensor:
        return torch.from_numpy(np.stack([s.bf for s in chosen]).transpose(0, 3, 1, 2) * 2 - 1)

    translator = translator.eval()
    dic = torch.from_numpy(np.stack([s.dic for s in samples])[:, None] * 2 - 1)
    result = {"DIC": scored(dic, samples), "BF": scored(brightfield(samples), samples)}
    for name, chosen in (others or {}).items():
        if chosen:
            result[name] = scored(brightfield(chosen), chosen)
    return result


def staining_row(
    sample: CellSample,
    stained: F32,
    baseline: F32,
    confidence: ConfidenceResult,
    perceptual: PerceptualMetric,
) -> dict[str, Any]:
    """One cell's staining against its brightfield truth (and the baseline's), its δ and γ,
    and the white cell's share of the crop (``area``, which δ tracks)."""
    return {
        "mse": mse(stained, sample.bf),
        "ssim": ssim(stained, sample.bf),
        "baseline_mse": mse(baseline, sample.bf),
        "baseline_ssim": ssim(baseline, sample.bf),
        "lpips": perceptual.distance(stained, sample.bf),
        "delta": confidence.delta,
        "delta_normalised": confidence.delta_normalised,
        "gamma": confidence.gamma,
        "area": float(np.mean(sample.mask >= MaskClass.CYTOPLASM)),
    }


def staining_summary(
    rows: list[dict[str, Any]],
    samples: list[CellSample],
    stained_images: list[F32],
    baseline_images: list[F32],
    *,
    perceptual: PerceptualMetric,
    fid: FidMetric | None,
    variant: ConfidenceVariant,
    seed: int,
    review_fraction: float,
    acceptable_ssim: float,
    review_sensitivity: float,
) -> dict[str, Any]:
    """What every translator's evaluation reports about its staining and its δ, from one
    row per cell (``mse``, ``ssim``, ``baseline_mse``, ``baseline_ssim``, ``lpips``,
    ``delta``, ``delta_normalised``, ``gamma``, ``area``): the means, RMSE, FID against the
    brightfield truth (with the backbones' provenance), the correlations of every
    confidence score with every quality measure and the calibrated review threshold."""
    means = {key: float(np.mean([r[key] for r in rows])) for key in MEANS}
    fid = fid or FidMetric(net="alexnet")
    truth = np.stack([s.bf for s in samples])
    image_fid: dict[str, Any] = {"fid": None, "baseline_fid": None}
    if len(samples) >= 2:
        image_fid = {
            "fid": fid.distance(truth, np.stack(stained_images)),
            "baseline_fid": fid.distance(truth, np.stack(baseline_images)),
        }
    deltas = [r["delta"] for r in rows]
    lpips_values = [r["lpips"] for r in rows]
    return {
        "cells": len(rows),
        **means,
        "rmse": float(np.sqrt(means["mse"])),
        "baseline_rmse": float(np.sqrt(means["baseline_mse"])),
        **image_fid,
        "fid_provenance": fid.provenance,
        "confidence_variant": variant.value,
        "delta_channels": ChannelMode.PER_CHANNEL.value,
        "confidence_correlations": confidence_correlations(rows, seed=seed),
        "delta_lpips_pearson_r": _pearson_or_none(deltas, lpips_values),
        "gamma_lpips_pearson_r": _pearson_or_none([r["gamma"] for r in rows], lpips_values),
        **review_calibration(
            deltas,
            [r["ssim"] >= acceptable_ssim for r in rows],
            sensitivity=review_sensitivity,
            fallback_fraction=review_fraction,
        ),
        "acceptable": f"SSIM against the registered brightfield ≥ {acceptable_ssim:g}",
        "lpips_provenance": perceptual.provenance,
    }


def review_calibration(
    deltas: list[float],
    acceptable: list[bool],
    *,
    sensitivity: float,
    fallback_fraction: float,
) -> dict[str, Any]:
    """``calibration`` (δ -> P(acceptable), None unless both kinds of cell are present, with
    its ``reliability`` table), ``review`` (the threshold for ``sensitivity`` and what it
    costs), ``review_threshold``, ``review_rule`` and ``review_fraction`` (the share of
    cells below the threshold)."""
    review = review_threshold_for(deltas, acceptable, sensitivity)
    calibration = None
    if 0 < sum(acceptable) < len(acceptable):
        fitted = fit_calibration(deltas, acceptable)
        calibration = {
            **fitted.as_dict(),
            "reliability": reliability(fitted.probability(deltas), acceptable),
        }
    if review["threshold"] is not None:
        threshold = float(review["threshold"])
        rule = f"sensitivity {sensitivity:g} on the unacceptable cells"
    else:
        threshold = float(np.quantile(deltas, fallback_fraction))
        rule = f"δ quantile {fallback_fraction:g} (no unacceptable cell)"
    return {
        "calibration": calibration,
        "review": review,
        "review_threshold": threshold,
        "review_rule": rule,
        "review_fraction": float(np.mean(np.asarray(deltas) < threshold)),
    }


def confidence_correlations(
    rows: list[dict[str, Any]], *, seed: int = 0, resamples: int = 2000
) -> dict[str, dict[str, dict[str, Any]]]:
    """score -> quality measure -> ``correlation_summary`` (partial r controlling for the
    white cell's share of the crop, ``area``), for every confidence score of the rows."""
    area = [r["area"] for r in rows]
    return {
        score: {
            measure: correlation_summary(
                [r[score] for r in rows],
                [r[measure] for r in rows],
                area,
                resamples=resamples,
                seed=seed,
            )
            for measure in QUALITY_MEASURES
        }
        for score in CONFIDENCE_SCORES
    }


def _pearson_or_none(x: list[float], y: list[float]) -> float | None:
    if len(x) <= 2 or np.std(x) == 0 or np.std(y) == 0:
        return None
    return pearson_r(x, y)


def _overlap_means(rows: list[dict[str, Any]], key: str) -> dict[str, float | None]:
    """Per mask class, the mean over cells where the class is in the truth or the prediction."""
    out: dict[str, float | None] = {}
    for name in MASK_CLASSES:
        values = [r[key][name] for r in rows if r[key][name] is not None]
        out[name] = float(np.mean(values)) if values else None
    return out


def _mean_present(values: dict[str, float | None]) -> float | None:
    present = [v for v in values.values() if v is not None]
    return float(np.mean(present)) if present else None


def _per_class(
    rows: list[dict[str, Any]], confusion: npt.NDArray[np.int64], names: list[str]
) -> dict[str, dict[str, Any]]:
    """Per true cell class: image quality means, and one-vs-rest classification figures.

    ``recall`` is the share of the class' cells classified as it; ``precision`` the share
    of cells predicted as it that are it; ``accuracy`` the one-vs-rest accuracy.
    """
    total = int(confusion.sum())
    table: dict[str, dict[str, Any]] = defaultdict(dict)
    for name in {r["class"] for r in rows}:
        chosen = [r for r in rows if r["class"] == name]
        c = names.index(name)
        tp = int(confusion[c, c])
        actual, predicted = int(confusion[c].sum()), int(confusion[:, c].sum())
        precision = tp / predicted if predicted else None
        recall = tp / actual if actual else None
        f1 = (
            2 * precision * recall / (precision + recall)
            if precision is not None and recall is not None and precision + recall > 0
            else 0.0
        )
        table[name] = {
            "cells": len(chosen),
            **{
                key: float(np.mean([r[key] for r in chosen]))
                for key in ("mse", "ssim", "baseline_mse", "baseline_ssim", "lpips", "delta")
            },
            "recall": recall,
            "precision": precision,
            "f1": f1,
            "accuracy": (total - actual - predicted + 2 * tp) / total,
            "dice_mean": _mean_present(_overlap_means(chosen, "dice")),
        }
    return dict(sorted(table.items()))
