from __future__ import annotations

import pytest
import torch

from stainless.bench.confidence import _one_size
from stainless.ml.confidence.adapters import StainingLatentModel
from stainless.ml.confidence.noise import naive_whole_latent_confidence, whole_latent_confidence
from stainless.ml.models.configs import MultiTaskConfig
from stainless.ml.models.mtmd import build_multitask


def test_model_one_stains_dic_and_reports_confidence() -> None:
    torch.manual_seed(0)
    config = MultiTaskConfig.tiny()
    model = StainingLatentModel(build_multitask(config).eval())
    dic = torch.rand(1, 1, config.image_size, config.image_size) * 2 - 1
    with torch.no_grad():
        batched = whole_latent_confidence(
            model, dic, k=4, generator=torch.Generator().manual_seed(1)
        )
        naive = naive_whole_latent_confidence(
            model, dic, k=4, generator=torch.Generator().manual_seed(1)
        )
    assert batched.clean.shape == (1, 3, config.image_size, config.image_size)
    assert batched.heatmap.shape == (config.image_size, config.image_size)
    # Batched and single decodes differ in the last float bits; a pixel may change bin.
    assert batched.delta == pytest.approx(naive.delta, abs=1e-3)
    assert batched.gamma > 0


def test_confidence_bench_figures_for_the_tiny_model() -> None:
    figures = _one_size(MultiTaskConfig.tiny(), cells=1, k=3, seed=0, on_step=None)
    assert set(figures) == {"cells_per_s", "naive_cells_per_s", "speedup", "gflops"}
    assert all(value > 0 for value in figures.values())
