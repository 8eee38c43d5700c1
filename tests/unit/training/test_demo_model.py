"""The committed demo model (synthetic phantom training only) and the thesis' sanity property."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from stainless.ml.confidence.adapters import StainingLatentModel, predicted_foreground
from stainless.ml.confidence.noise import whole_latent_confidence
from stainless.ml.metrics.perceptual import PerceptualMetric
from stainless.ml.models.mtmd import build_multitask
from stainless_training.config import load_config
from stainless_training.evaluate import ColourTransfer, evaluate
from stainless_training.mtmd import model_config
from stainless_training.phantom_data import CellSample, phantom_samples

DEMO = Path(__file__).resolve().parents[3] / "training" / "demo_model"


@pytest.fixture(scope="module")
def demo() -> StainingLatentModel:
    net = model_config(load_config(DEMO / "config.yaml"))
    translator = build_multitask(net).eval()
    translator.load_state_dict(torch.load(DEMO / "checkpoint.pt", weights_only=False)["translator"])
    return StainingLatentModel(translator)


@pytest.fixture(scope="module")
def held_out() -> list[CellSample]:
    """Cells of phantom fields the demo model never saw (its training seed is 0)."""
    return phantom_samples(fields=24, seed=2000, image_size=64)[:60]


@pytest.mark.slow
def test_blacking_out_a_patch_lowers_confidence_and_raises_uncertainty(demo, held_out) -> None:  # type: ignore[no-untyped-def]
    """DESIGN: a 50x50 black patch lowers δ and raises γ — here on ≥ 50 held-out cells.

    The tiny model sees 256-px crops at 64 px, so the patch is 13x13 at the centre. δ and
    γ are the served ones: the noise masked to the white cell the model's segmenter finds.
    """
    cells = held_out
    assert len(cells) >= 50

    def white_cell(h: torch.Tensor) -> torch.Tensor:  # the served δ's noise mask
        return predicted_foreground(demo.translator, h)

    holds = 0
    for index, cell in enumerate(cells):
        dic = torch.from_numpy(cell.dic[None, None] * 2 - 1)
        patched = dic.clone()
        patched[..., 26:39, 26:39] = -1.0
        with torch.no_grad():
            before = whole_latent_confidence(
                demo, dic, foreground=white_cell, generator=torch.Generator().manual_seed(index)
            )
            after = whole_latent_confidence(
                demo,
                patched,
                foreground=white_cell,
                generator=torch.Generator().manual_seed(index),
            )
        holds += after.delta < before.delta and after.gamma > before.gamma
    assert holds / len(cells) >= 0.8


@pytest.mark.slow
def test_the_demo_model_stains_classifies_and_its_delta_tracks_lpips(demo) -> None:  # type: ignore[no-untyped-def]
    """On the evaluation set of training/demo_model/metrics.json (``stainless-evaluate``'s
    default held-out seed 1000, 20 fields): baseline, accuracy and δ ↔ LPIPS r."""
    training = phantom_samples(fields=8, seed=0, image_size=64)
    cells = phantom_samples(fields=20, seed=1000, image_size=64)
    metrics = evaluate(
        demo.translator,
        cells,
        baseline=ColourTransfer.fit(training),
        perceptual=PerceptualMetric(),
    )
    assert metrics["ssim"] > metrics["baseline_ssim"]
    assert metrics["mse"] < metrics["baseline_mse"]
    assert metrics["accuracy"] >= 0.85
    # δ as served (k = 10, α = 3) tracks per-cell LPIPS (random backbone): less confident,
    # worse stain
    assert metrics["delta_lpips_pearson_r"] <= -0.3
