"""Evaluation of model 2 on held-out phantom cells: image quality and the chapter-6 δ.

The cell is stained as Algorithm 2 stains it (the style sampled from the mapping network,
the structure and background from the DIC input) and δ, γ and the heat map are that
algorithm's (k = 20, α = 3 on the structure, β = 7 on the style), so δ is the variant the
thesis validated against image quality (|r(δ, LPIPS)| = 0.71 on real cells). Quality is
measured against the registered brightfield crop, as for model 1
(:func:`stainless_training.evaluate.staining_summary`); model 2 has no classifier and no
segmentation head.

The sanity property of thesis ch. 7.2: blacking out a randomly placed square of the input
must lower δ and raise γ. The thesis' square is 50 × 50 px on 256 px images; the same
share of the image is used here (12 px on 64 px crops), with the noise drawn as for the
untouched input, so the patch is the only difference.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from stainless.ml.confidence.adapters import SampledStyleModel
from stainless.ml.confidence.noise import DISENTANGLED, ConfidenceResult, disentangled_confidence
from stainless.ml.metrics.fid import FidMetric
from stainless.ml.metrics.perceptual import PerceptualMetric
from stainless.ml.models.disentangled import DisentangledTranslator
from stainless_training.evaluate import (
    F32,
    ColourTransfer,
    Confidence,
    stained_image,
    staining_row,
    staining_summary,
)
from stainless_training.phantom_data import CLASSES, CellSample

THESIS_PATCH, THESIS_IMAGE = 50, 256


def algorithm2(
    translator: DisentangledTranslator, *, k: int = 20, alpha: float = 3.0, beta: float = 7.0
) -> Confidence:
    """Algorithm 2 on ``translator`` with a generator seeded per call: the style code, then
    the structure noise, then the style noise are drawn from it (the served head's order)."""
    translator = translator.eval()

    def run(x: Tensor, seed: int) -> ConfidenceResult:
        generator = torch.Generator().manual_seed(seed)
        model = SampledStyleModel(translator, generator=generator)
        return disentangled_confidence(model, x, k=k, alpha=alpha, beta=beta, generator=generator)

    return run


def patch_side(image_size: int) -> int:
    """The thesis' 50 px square on 256 px images, as the same share of an ``image_size`` image."""
    return max(1, round(THESIS_PATCH * image_size / THESIS_IMAGE))


def black_out(x: Tensor, side: int, rng: np.random.Generator) -> Tensor:
    """``x`` ``[1, C, S, S]`` in [-1, 1] with a randomly placed ``side`` square set to black."""
    size = x.shape[-1]
    side = min(side, size)
    top, left = (int(v) for v in rng.integers(0, size - side + 1, size=2))
    out = x.clone()
    out[..., top : top + side, left : left + side] = -1.0
    return out


def evaluate_disentangled(
    translator: DisentangledTranslator,
    samples: list[CellSample],
    *,
    baseline: ColourTransfer,
    perceptual: PerceptualMetric,
    k: int = 20,
    alpha: float = 3.0,
    beta: float = 7.0,
    seed: int = 0,
    review_fraction: float = 0.2,
    acceptable_ssim: float = 0.75,
    review_sensitivity: float = 0.9,
    fid: FidMetric | None = None,
    per_cell: bool = False,
) -> dict[str, Any]:
    """Metrics of model 2 on held-out ``samples`` (a dict ready for metrics.json): the
    staining summary of :func:`staining_summary` for the chapter-6 δ and the blackout
    sanity check (``blackout``: the patch, and the share of cells whose δ fell, whose γ
    rose, and both). ``per_cell`` adds a row per cell."""
    if not samples:
        raise ValueError("nothing to evaluate")
    confidence = algorithm2(translator, k=k, alpha=alpha, beta=beta)
    side = patch_side(samples[0].dic.shape[-1])
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    stained_images: list[F32] = []
    baseline_images: list[F32] = []
    with torch.no_grad():
        for index, sample in enumerate(samples):
            x = torch.from_numpy(sample.dic[None, None] * 2 - 1)
            result = confidence(x, seed + index)
            blacked = confidence(black_out(x, side, rng), seed + index)
            stained, plain = stained_image(result), baseline(sample.dic)
            stained_images.append(stained)
            baseline_images.append(plain)
            rows.append(
                {
                    "class": str(CLASSES[sample.label]),
                    **staining_row(sample, stained, plain, result, perceptual),
                    "blackout_delta": blacked.delta,
                    "blackout_gamma": blacked.gamma,
                }
            )
    lower = [r["blackout_delta"] < r["delta"] for r in rows]
    higher = [r["blackout_gamma"] > r["gamma"] for r in rows]
    result_metrics: dict[str, Any] = {
        **staining_summary(
            rows,
            samples,
            stained_images,
            baseline_images,
            perceptual=perceptual,
            fid=fid,
            variant=DISENTANGLED,
            seed=seed,
            review_fraction=review_fraction,
            acceptable_ssim=acceptable_ssim,
            review_sensitivity=review_sensitivity,
        ),
        "noise": {"k": k, "alpha": alpha, "beta": beta, "style": "sampled (mapping network)"},
        "blackout": {
            "patch_px": side,
            "rule": f"{THESIS_PATCH}×{THESIS_PATCH} px on {THESIS_IMAGE} px images, "
            "the same share of the crop",
            "delta_lower": float(np.mean(lower)),
            "gamma_higher": float(np.mean(higher)),
            "both": float(np.mean([a and b for a, b in zip(lower, higher, strict=True)])),
        },
    }
    if per_cell:
        result_metrics["per_cell"] = rows
    return result_metrics
