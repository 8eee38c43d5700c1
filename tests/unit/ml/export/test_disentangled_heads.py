"""Model 2's served chapter-6 confidence against eager Algorithm 2 under the same seed."""

from __future__ import annotations

import pytest
import torch

from stainless.ml.confidence.adapters import SampledStyleModel
from stainless.ml.confidence.noise import disentangled_confidence
from stainless.ml.export.disentangled_heads import served_disentangled_models
from stainless.ml.models.configs import DisentangledConfig
from stainless.ml.models.disentangled import build_disentangled

CONFIG = DisentangledConfig.tiny()


@pytest.fixture(scope="module")
def translator():  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    return build_disentangled(CONFIG).eval()


def test_served_algorithm_2_matches_eager(translator) -> None:  # type: ignore[no-untyped-def]
    served = served_disentangled_models(translator, image_size=CONFIG.image_size, k=6)
    head = served["stain_confidence"]
    dic = torch.rand(1, 1, CONFIG.image_size, CONFIG.image_size) * 2 - 1
    with torch.no_grad():
        torch.manual_seed(5)
        stained, delta, gamma, heat = head(dic)
        generator = torch.Generator().manual_seed(5)
        eager = disentangled_confidence(
            SampledStyleModel(translator, generator=generator), dic, k=6, generator=generator
        )
    assert (stained - eager.clean).abs().max().item() < 1e-4
    assert delta.item() == pytest.approx(eager.delta, abs=1e-4)
    assert gamma.item() == pytest.approx(eager.gamma, abs=1e-4)
    assert (heat[0] - torch.from_numpy(eager.heatmap)).abs().max().item() < 1e-4
    batch = torch.rand(3, 1, CONFIG.image_size, CONFIG.image_size)
    size = CONFIG.image_size
    with torch.no_grad():
        shapes = [tuple(t.shape) for t in head(batch)]
    assert shapes == [(3, CONFIG.image_channels, size, size), (3,), (3,), (3, size, size)]


def test_served_noise_lowers_delta_with_its_scales(translator) -> None:  # type: ignore[no-untyped-def]
    dic = torch.rand(2, 1, CONFIG.image_size, CONFIG.image_size) * 2 - 1
    deltas = []
    for alpha, beta in ((0.0, 0.0), (3.0, 7.0)):
        head = served_disentangled_models(
            translator, image_size=CONFIG.image_size, k=4, alpha=alpha, beta=beta
        )["stain_confidence"]
        with torch.no_grad():
            torch.manual_seed(1)
            _, delta, gamma, _ = head(dic)
        deltas.append(delta)
        if alpha == 0.0:
            assert float(gamma.max()) < 1e-10  # batched decodes differ in the last bits
    assert torch.all(deltas[1] < deltas[0])
