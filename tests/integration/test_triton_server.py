"""The real Triton Inference Server serving an exported repository (python backend, CPU).

Every exported model loads; Triton's own view of each config agrees with what the
manifest and the export say; inference at batch 1 and 7 equals the served model run in
this process (eager onnxruntime / TorchScript) within 1e-4. The confidence head draws its
noise inside the served model: the server seeds each request (``STAINLESS_NOISE_SEED=0``)
as this process seeds its run, so δ, γ and the heat map are compared too.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import servers as infra
import torch
import tritonclient.grpc as grpcclient

from stainless.core.inference.manifest import read_manifest
from stainless.ml.export.triton import load_served

pytestmark = pytest.mark.integration

TOL = 1e-4
MODELS = ("stain", "classify", "segment", "stain_confidence")
SEED = 0  # the server's STAINLESS_NOISE_SEED (tests/conftest.py)
DETECTORS = {"wbc_detector_bf": 3, "wbc_detector_dic": 1}  # input channels


@pytest.fixture(scope="module")
def triton(triton_server: Any) -> Iterator[grpcclient.InferenceServerClient]:
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    yield client
    client.close()


def _infer(
    client: grpcclient.InferenceServerClient, model: str, batch: np.ndarray
) -> list[np.ndarray]:
    config = client.get_model_config(model, as_json=True)["config"]
    request = grpcclient.InferInput("INPUT__0", list(batch.shape), "FP32")
    request.set_data_from_numpy(batch)
    names = [output["name"] for output in config["output"]]
    answer = client.infer(
        model, [request], outputs=[grpcclient.InferRequestedOutput(n) for n in names]
    )
    return [answer.as_numpy(name) for name in names]


def _eager(repo: Path, model: str, batch: np.ndarray) -> list[np.ndarray]:
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        out = load_served(repo, model)(torch.from_numpy(batch))
    return [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]


def test_every_exported_model_is_loaded(
    triton: grpcclient.InferenceServerClient, exported_python_repo: Path
) -> None:
    index = {m.name: m.state for m in triton.get_model_repository_index().models}
    assert index == dict.fromkeys(infra.served_models(exported_python_repo), "READY")
    assert len(index) == 6


def test_triton_reads_the_configs_the_manifest_describes(
    triton: grpcclient.InferenceServerClient, exported_python_repo: Path
) -> None:
    manifest = read_manifest(exported_python_repo)
    size = manifest.image_size
    for model in MODELS:
        config = triton.get_model_config(model, as_json=True)["config"]
        assert config["backend"] == "python"
        assert int(config["max_batch_size"]) == 32
        (served_input,) = config["input"]
        assert [int(d) for d in served_input["dims"]] == [1, size, size]
        assert "dynamic_batching" in config
        assert config["instance_group"][0]["kind"] == "KIND_CPU"
        (warmup,) = config["model_warmup"]  # run before the model was called ready
        assert (int(warmup["batch_size"]), int(warmup["count"])) == (1, 2)
        assert warmup["inputs"]["INPUT__0"]["zero_data"] is True
    for detector in DETECTORS:  # fields of any size: nothing to warm up on
        assert not triton.get_model_config(detector, as_json=True)["config"].get("model_warmup")
    probabilities = triton.get_model_config("classify", as_json=True)["config"]["output"][0]
    assert [int(d) for d in probabilities["dims"]] == [len(manifest.classes)]


@pytest.mark.parametrize("batch", [1, 7])
@pytest.mark.parametrize("model", MODELS)
def test_inference_equals_the_model_run_here(
    triton: grpcclient.InferenceServerClient, exported_python_repo: Path, model: str, batch: int
) -> None:
    size = read_manifest(exported_python_repo).image_size
    cells = np.random.default_rng(batch).uniform(-1, 1, (batch, 1, size, size))
    cells = cells.astype(np.float32)
    served, here = _infer(triton, model, cells), _eager(exported_python_repo, model, cells)
    assert len(served) == len(here)
    for index, (got, want) in enumerate(zip(served, here, strict=True)):
        assert got.shape[0] == batch and np.isfinite(got).all(), index
        # δ and γ: [B] here, [B, 1] as Triton reshapes them
        np.testing.assert_allclose(got.reshape(want.shape), want, atol=TOL, err_msg=str(index))


@pytest.mark.parametrize("model", sorted(DETECTORS))
def test_detectors_take_any_field_size(
    triton: grpcclient.InferenceServerClient, exported_python_repo: Path, model: str
) -> None:
    channels = DETECTORS[model]
    fields = np.random.default_rng(0).uniform(0, 1, (2, channels, 96, 64)).astype(np.float32)
    (served,) = _infer(triton, model, fields)
    (here,) = _eager(exported_python_repo, model, fields)
    np.testing.assert_allclose(served, here, atol=TOL)
