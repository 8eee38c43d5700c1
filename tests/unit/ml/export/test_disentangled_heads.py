"""Model 2's served chapter-6 confidence against eager Algorithm 2 under the same seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from stainless.core.inference.local import LocalInference
from stainless.ml.confidence.adapters import SampledStyleModel
from stainless.ml.confidence.noise import disentangled_confidence
from stainless.ml.export.disentangled_heads import served_disentangled_models
from stainless.ml.models.configs import DisentangledConfig, MultiTaskConfig
from stainless.ml.models.disentangled import build_disentangled
from stainless.ml.models.mtmd import build_multitask

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


def test_the_exported_repository_serves_algorithm_2_with_model_1s_classes(
    disentangled_python_repo: Path,
) -> None:
    """Through the in-process adapter (seed 0 per request): δ, γ, heat map and stained
    image as eager Algorithm 2 under the same seed, the probabilities model 1's."""
    local = LocalInference(disentangled_python_repo)
    manifest = local.manifest
    assert manifest.confidence_variant == "disentangled"
    assert (manifest.k, manifest.alpha, manifest.beta) == (6, 3.0, 7.0)
    assert manifest.classifier == "mtmd-tiny" and manifest.model_version == "disentangled-tiny/1"
    assert sorted(p.name for p in disentangled_python_repo.iterdir() if p.is_dir()) == [
        "classify",
        "stain_confidence",
    ]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model_2 = build_disentangled(CONFIG).eval()
        torch.manual_seed(1)
        model_1 = build_multitask(MultiTaskConfig.tiny()).eval()
    batch = np.random.default_rng(0).random((1, CONFIG.image_size, CONFIG.image_size))
    [served] = local.infer(batch.astype(np.float32))
    dic = torch.from_numpy(batch[None].astype(np.float32)) * 2 - 1
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        eager = disentangled_confidence(
            SampledStyleModel(model_2, generator=generator), dic, k=6, generator=generator
        )
        probabilities = torch.softmax(
            model_1.classify(model_1.encode(dic.expand(-1, model_1.in_channels, -1, -1))), dim=1
        )[0]
    assert served.delta == pytest.approx(eager.delta, abs=1e-4)
    assert served.gamma == pytest.approx(eager.gamma, abs=1e-4)
    assert np.abs(served.heatmap - eager.heatmap).max() < 1e-4
    stained = (eager.clean[0].permute(1, 2, 0).numpy() + 1) / 2
    assert np.abs(served.stained - stained.clip(0, 1)).max() < 1e-4
    assert list(served.probabilities.values()) == pytest.approx(probabilities.tolist(), abs=1e-5)
