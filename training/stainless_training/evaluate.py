"""Evaluation of model 1 on held-out phantom cells: image quality, classification, confidence.

Image quality is measured against the registered brightfield crop and compared with a
baseline that keeps the DIC image and transfers colour: each brightfield channel as a
linear function of DIC intensity, fitted by least squares on the training cells.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from stainless.confidence.adapters import StainingLatentModel, predicted_foreground
from stainless.confidence.noise import whole_latent_confidence
from stainless.metrics.classification import classification_report, pearson_r
from stainless.metrics.image import mse, ssim
from stainless.metrics.perceptual import PerceptualMetric
from stainless.models.mtmd import Domain, MultiTaskTranslator
from stainless_training.phantom_data import CLASSES, CellSample

F32 = npt.NDArray[np.float32]


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


def _stain(translator: MultiTaskTranslator, dic: F32) -> F32:
    x = torch.from_numpy(dic[None, None] * 2 - 1).repeat(1, translator.in_channels, 1, 1)
    out = translator.translate(x, Domain.BF)[0]
    return ((out.permute(1, 2, 0).numpy() + 1) / 2).clip(0, 1).astype(np.float32)


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
) -> dict[str, Any]:
    """Metrics of ``translator`` on held-out ``samples`` (a dict ready for metrics.json).

    ``review_threshold`` is calibrated as the δ quantile ``review_fraction``: that share of
    held-out cells, the least confident, would go to expert review.
    """
    if not samples:
        raise ValueError("nothing to evaluate")
    if not 0 < review_fraction < 1:
        raise ValueError(f"review_fraction must be in (0, 1), got {review_fraction}")
    translator = translator.eval()
    model = StainingLatentModel(translator)
    rows: list[dict[str, Any]] = []
    probabilities = []
    with torch.no_grad():
        for index, sample in enumerate(samples):
            stained = _stain(translator, sample.dic)
            plain = baseline(sample.dic)
            x = torch.from_numpy(sample.dic[None, None] * 2 - 1)
            h = model.encode(x)
            confidence = whole_latent_confidence(
                model,
                x,
                k=k,
                alpha=alpha,
                foreground=predicted_foreground(translator, h),
                generator=torch.Generator().manual_seed(seed + index),
            )
            probabilities.append(torch.softmax(translator.classify(h), dim=1)[0].numpy())
            rows.append(
                {
                    "class": str(CLASSES[sample.label]),
                    "mse": mse(stained, sample.bf),
                    "ssim": ssim(stained, sample.bf),
                    "baseline_mse": mse(plain, sample.bf),
                    "baseline_ssim": ssim(plain, sample.bf),
                    "lpips": perceptual.distance(stained, sample.bf),
                    "delta": confidence.delta,
                    "gamma": confidence.gamma,
                }
            )
    report = classification_report(
        [s.label for s in samples], np.stack(probabilities), class_names=[str(c) for c in CLASSES]
    )
    deltas = [r["delta"] for r in rows]
    lpips_values = [r["lpips"] for r in rows]
    per_class: dict[str, dict[str, float]] = defaultdict(dict)
    for name in {r["class"] for r in rows}:
        chosen = [r for r in rows if r["class"] == name]
        per_class[name] = {
            "cells": len(chosen),
            **{
                key: float(np.mean([r[key] for r in chosen]))
                for key in ("mse", "ssim", "baseline_mse", "baseline_ssim", "lpips", "delta")
            },
        }
    return {
        "cells": len(rows),
        **{
            key: float(np.mean([r[key] for r in rows]))
            for key in ("mse", "ssim", "baseline_mse", "baseline_ssim", "lpips", "delta", "gamma")
        },
        "accuracy": report.accuracy,
        "macro_f1": report.macro_f1,
        "auc_ovr": report.auc_ovr,
        "confusion": report.confusion,
        "delta_lpips_pearson_r": pearson_r(deltas, lpips_values) if len(rows) > 2 else None,
        "review_threshold": float(np.quantile(deltas, review_fraction)),
        "review_fraction": review_fraction,
        "lpips_provenance": perceptual.provenance,
        "per_class": dict(sorted(per_class.items())),
    }
