"""Model 2's evaluation: Algorithm 2's δ on held-out cells and the blackout sanity check."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stainless.imaging.phantom import PhantomConfig
from stainless.ml.metrics.fid import FidMetric
from stainless.ml.metrics.perceptual import PerceptualMetric
from stainless.ml.models.configs import DisentangledConfig
from stainless.ml.models.disentangled import build_disentangled
from stainless_training.evaluate import ColourTransfer
from stainless_training.evaluate_disentangled import (
    algorithm2,
    black_out,
    evaluate_disentangled,
    patch_side,
)
from stainless_training.phantom_data import phantom_samples


def test_patch_is_the_thesis_share_of_the_image() -> None:
    assert patch_side(256) == 50
    assert patch_side(64) == 12
    assert patch_side(2) == 1


def test_black_out_sets_one_square_to_black() -> None:
    x = torch.zeros(1, 1, 20, 20)
    out = black_out(x, 6, np.random.default_rng(0))
    black = (out == -1).squeeze().numpy()
    rows, columns = np.nonzero(black)
    assert black.sum() == 36
    assert rows.max() - rows.min() == 5 and columns.max() - columns.min() == 5
    assert (x == 0).all()  # the input is left as it was
    assert (black_out(x, 99, np.random.default_rng(0)) == -1).all()  # clipped to the image


def test_algorithm2_is_seeded_per_call() -> None:
    torch.manual_seed(0)
    model = build_disentangled(DisentangledConfig.tiny())
    x = torch.rand(1, 1, 64, 64) * 2 - 1
    confidence = algorithm2(model, k=4)
    first, again, other = confidence(x, 3), confidence(x, 3), confidence(x, 4)
    assert first.delta == again.delta and first.variant == "disentangled"
    assert first.delta != other.delta  # another style code and other noise


def test_evaluation_reports_the_chapter6_delta_and_the_blackout_check() -> None:
    torch.manual_seed(0)
    config = DisentangledConfig.tiny()
    samples = phantom_samples(
        fields=2, seed=4, image_size=config.image_size, config=PhantomConfig(width=768, height=576)
    )[:6]
    metrics = evaluate_disentangled(
        build_disentangled(config),
        samples,
        baseline=ColourTransfer.fit(samples),
        perceptual=PerceptualMetric(),
        k=4,
        fid=FidMetric(net="alexnet"),
        per_cell=True,
    )
    assert metrics["cells"] == len(samples) == len(metrics["per_cell"])
    assert metrics["confidence_variant"] == "disentangled"
    assert metrics["noise"] == {
        "k": 4,
        "alpha": 3.0,
        "beta": 7.0,
        "style": "sampled (mapping network)",
    }
    blackout = metrics["blackout"]
    assert blackout["patch_px"] == 12
    rows = metrics["per_cell"]
    lower = np.mean([r["blackout_delta"] < r["delta"] for r in rows])
    assert blackout["delta_lower"] == pytest.approx(lower)
    assert blackout["both"] <= min(blackout["delta_lower"], blackout["gamma_higher"])
    assert set(metrics["confidence_correlations"]) == {"delta", "delta_normalised", "gamma"}
    assert "RANDOM backbone" in metrics["lpips_provenance"]
    assert "accuracy" not in metrics  # model 2 does not classify
    assert np.isfinite(metrics["review_threshold"])
