from __future__ import annotations

import numpy as np
import pytest
import torch

from stainless.imaging.phantom import PhantomConfig
from stainless.metrics.perceptual import PerceptualMetric
from stainless.models.configs import MultiTaskConfig
from stainless.models.mtmd import build_multitask
from stainless_training.evaluate import ColourTransfer, evaluate
from stainless_training.phantom_data import phantom_samples


def test_colour_transfer_fits_a_linear_map() -> None:
    samples = phantom_samples(
        fields=2, seed=3, image_size=32, config=PhantomConfig(width=768, height=576)
    )
    transfer = ColourTransfer.fit(samples)
    assert transfer.slope.shape == (3,)
    out = transfer(samples[0].dic)
    assert out.shape == (32, 32, 3) and out.min() >= 0 and out.max() <= 1
    with pytest.raises(ValueError, match="training samples"):
        ColourTransfer.fit([])


def test_evaluation_reports_quality_classification_and_confidence() -> None:
    torch.manual_seed(0)
    config = MultiTaskConfig.tiny()
    samples = phantom_samples(
        fields=3, seed=4, image_size=config.image_size, config=PhantomConfig(width=768, height=576)
    )
    metrics = evaluate(
        build_multitask(config),
        samples,
        baseline=ColourTransfer.fit(samples),
        perceptual=PerceptualMetric(),
        k=3,
    )
    assert metrics["cells"] == len(samples)
    for key in (
        "mse",
        "ssim",
        "baseline_mse",
        "baseline_ssim",
        "lpips",
        "delta",
        "gamma",
        "accuracy",
    ):
        assert np.isfinite(metrics[key]), key
    assert "RANDOM backbone" in metrics["lpips_provenance"]
    assert sum(row["cells"] for row in metrics["per_class"].values()) == len(samples)
    assert metrics["review_fraction"] == 0.2
    assert 0 < metrics["review_threshold"] <= metrics["delta"]  # a low quantile of δ
