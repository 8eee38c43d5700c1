"""Model 2 served by the real Triton server: its chapter-6 ``stain_confidence`` (Algorithm 2,
with model 1's classifier) computes what eager PyTorch computes under the same seed."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from stainless.core.config import TritonProtocol
from stainless.core.inference.local import LocalInference
from stainless.core.inference.manifest import read_manifest
from stainless.core.inference.triton import TritonInference
from stainless.ml.confidence.adapters import SampledStyleModel
from stainless.ml.confidence.noise import disentangled_confidence
from stainless.ml.models.configs import DisentangledConfig
from stainless.ml.models.disentangled import build_disentangled

pytestmark = pytest.mark.integration

TOL = 1e-4


@pytest.fixture(scope="module")
def served(
    disentangled_triton, disentangled_python_repo: Path
) -> Iterator[Callable[[TritonProtocol], TritonInference]]:  # type: ignore[no-untyped-def]
    """Clients of the Triton server serving the model-2 repository."""
    clients: list[TritonInference] = []

    def client(protocol: TritonProtocol) -> TritonInference:
        grpc = protocol is TritonProtocol.GRPC
        clients.append(
            TritonInference(
                disentangled_triton.grpc_url if grpc else disentangled_triton.http_url,
                manifest=read_manifest(disentangled_python_repo),
                protocol=protocol,
                timeout_s=20,
            )
        )
        return clients[-1]

    yield client
    for each in clients:
        each.close()


def _batch(n: int, seed: int = 0) -> np.ndarray:
    size = DisentangledConfig.tiny().image_size
    return np.random.default_rng(seed).random((n, size, size), dtype=np.float32)


@pytest.mark.parametrize("protocol", [TritonProtocol.GRPC, TritonProtocol.HTTP], ids=str)
def test_served_chapter6_delta_matches_eager_algorithm_2(
    served: Callable[[TritonProtocol], TritonInference], protocol: TritonProtocol
) -> None:
    client = served(protocol)
    assert client.ready() and client.manifest.confidence_variant == "disentangled"
    cell = _batch(1, seed=3)
    [got] = client.infer(cell)
    with torch.random.fork_rng(devices=[]):  # the model disentangled_python_repo holds
        torch.manual_seed(0)
        model = build_disentangled(DisentangledConfig.tiny()).eval()
    generator = torch.Generator().manual_seed(0)  # the server seeds each request with 0
    dic = torch.from_numpy(cell[None]) * 2 - 1
    with torch.no_grad():
        want = disentangled_confidence(
            SampledStyleModel(model, generator=generator), dic, k=6, generator=generator
        )
    assert abs(got.delta - want.delta) < TOL and abs(got.gamma - want.gamma) < TOL
    assert np.abs(got.heatmap - want.heatmap).max() < TOL
    stained = ((want.clean[0].permute(1, 2, 0).numpy() + 1) / 2).clip(0, 1)
    assert np.abs(got.stained - stained).max() < TOL


def test_a_batch_matches_the_in_process_adapter(
    served: Callable[[TritonProtocol], TritonInference], disentangled_python_repo: Path
) -> None:
    client = served(TritonProtocol.GRPC)
    batch = _batch(4, seed=8)
    local = LocalInference(disentangled_python_repo).infer(batch)
    for got, want in zip(client.infer(batch), local, strict=True):
        assert abs(got.delta - want.delta) < TOL and abs(got.gamma - want.gamma) < TOL
        assert np.abs(got.stained - want.stained).max() < TOL
        assert got.probabilities == pytest.approx(want.probabilities, abs=TOL)
