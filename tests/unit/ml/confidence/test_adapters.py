from __future__ import annotations

import pytest
import torch

from stainless.bench.confidence import _one_size
from stainless.ml.confidence.adapters import SampledStyleModel, StainingLatentModel
from stainless.ml.confidence.noise import (
    DISENTANGLED,
    ConfidenceResult,
    disentangled_confidence,
    naive_whole_latent_confidence,
    whole_latent_confidence,
)
from stainless.ml.models.configs import DisentangledConfig, MultiTaskConfig
from stainless.ml.models.disentangled import STAINED, build_disentangled
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


def test_model_two_confidence_samples_its_style_as_algorithm_2() -> None:
    """Algorithm 2 on the real model 2: the style comes from the mapping network (z_s drawn
    from the generator), not from the style encoder; the same seed gives the same δ."""
    torch.manual_seed(0)
    config = DisentangledConfig.tiny()
    translator = build_disentangled(config).eval()
    dic = torch.rand(1, 1, config.image_size, config.image_size) * 2 - 1

    def run(seed: int) -> ConfidenceResult:
        generator = torch.Generator().manual_seed(seed)
        model = SampledStyleModel(translator, generator=generator)
        return disentangled_confidence(model, dic, generator=generator)

    first, again, other = run(3), run(3), run(4)
    assert first.variant == DISENTANGLED
    assert (first.delta, first.gamma) == (again.delta, again.gamma)
    assert first.delta != other.delta
    x = dic.repeat(1, config.image_channels, 1, 1)
    z = torch.randn(1, config.style_noise_dim, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        sampled = translator.translate(x, STAINED, style_noise=z)
        encoded = translator.translate(x, STAINED)
    torch.testing.assert_close(first.clean, sampled)  # x_trg = G(x, s~, t)
    assert not torch.allclose(first.clean, encoded)
