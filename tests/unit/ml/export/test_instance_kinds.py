"""One export, several repositories that agree: GPU and CPU instances of Triton's native
backends and the python backend's CPU variant serve the same tensors the same way."""

from __future__ import annotations

import json
import re
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from stainless.ml.export.triton import (
    InstanceKind,
    load_served,
    served_platform,
)
from stainless.ml.models.configs import MultiTaskConfig

CONFIG = MultiTaskConfig.tiny()
BACKEND_LINE = re.compile(r'^(platform|backend): "[^"]+"\n', re.MULTILINE)
INSTANCE_LINE = re.compile(r"^instance_group \[ \{ kind: KIND_(GPU|CPU) count: 1 \} \]\n", re.M)


@pytest.fixture(scope="module")
def repositories(
    tmp_path_factory: pytest.TempPathFactory, tiny_export: Callable[[Path, str], Path]
) -> dict[InstanceKind, Path]:
    """The same tiny model and detectors exported for every instance kind."""
    root = tmp_path_factory.mktemp("kinds")
    return {kind: tiny_export(root / kind.value, kind.value) for kind in InstanceKind}


def _models(repo: Path) -> list[str]:
    return sorted(p.parent.name for p in repo.glob("*/config.pbtxt"))


def test_every_kind_serves_the_same_tensors_batching_and_batch_size(
    repositories: dict[InstanceKind, Path],
) -> None:
    production = repositories[InstanceKind.GPU]
    assert len(_models(production)) == 6  # four translator heads, two detectors
    for kind, repo in repositories.items():
        assert _models(repo) == _models(production), kind
        for model in _models(production):
            want = (production / model / "config.pbtxt").read_text()
            got = (repo / model / "config.pbtxt").read_text()
            # They differ in the backend and the instance group only.
            assert INSTANCE_LINE.sub("", BACKEND_LINE.sub("", got)) == INSTANCE_LINE.sub(
                "", BACKEND_LINE.sub("", want)
            ), f"{kind}/{model}"
            assert BACKEND_LINE.search(got) and INSTANCE_LINE.search(got), f"{kind}/{model}"


def test_the_python_variant_wraps_the_same_model_file(
    repositories: dict[InstanceKind, Path],
) -> None:
    python, native = repositories[InstanceKind.CPU_PYTHON], repositories[InstanceKind.CPU]
    for model in _models(native):
        config = (python / model / "config.pbtxt").read_text()
        assert 'backend: "python"' in config and "KIND_CPU" in config
        assert "platform:" not in config
        files = sorted(p.name for p in (python / model / "1").iterdir())
        native_files = sorted(p.name for p in (native / model / "1").iterdir())
        assert files == sorted([*native_files, "model.py"]), model
        assert served_platform(python / model) is None  # model.py picks the file
        assert served_platform(native / model) is not None


def test_a_later_native_export_removes_the_wrapper(
    tmp_path: Path, tiny_export: Callable[[Path, str], Path]
) -> None:
    repo = tiny_export(tmp_path / "repo", InstanceKind.CPU_PYTHON.value)
    assert (repo / "stain" / "1" / "model.py").is_file()
    tiny_export(repo, InstanceKind.GPU.value)
    assert not (repo / "stain" / "1" / "model.py").exists()


# ------------------------------------------------------------------ the python backend's model


class _Tensor:
    """Triton's ``pb_utils.Tensor``: a name and an array."""

    def __init__(self, name: str, array: np.ndarray) -> None:
        self.name, self.array = name, array

    def as_numpy(self) -> np.ndarray:
        return self.array


@pytest.fixture
def python_model() -> Iterator[Any]:
    """``model.py`` with a stand-in for the module Triton's python backend provides (the
    real server runs it in the integration tests)."""
    utils = types.ModuleType("triton_python_backend_utils")
    utils.Tensor = _Tensor  # type: ignore[attr-defined]
    utils.InferenceResponse = lambda output_tensors: output_tensors  # type: ignore[attr-defined]
    utils.get_input_tensor_by_name = lambda request, name: request[name]  # type: ignore[attr-defined]
    sys.modules["triton_python_backend_utils"] = utils
    try:
        from stainless.ml.export import python_model

        yield python_model
    finally:
        sys.modules.pop("triton_python_backend_utils")
        sys.modules.pop("stainless.ml.export.python_model", None)


@pytest.mark.parametrize("model", ["stain", "classify", "wbc_detector_dic"])
def test_python_model_runs_a_dynamic_batch_once_and_splits_it(
    repositories: dict[InstanceKind, Path], python_model: Any, model: str
) -> None:
    repo = repositories[InstanceKind.CPU_PYTHON]
    served = python_model.TritonPythonModel()
    config = _config_json(repo / model / "config.pbtxt")
    served.initialize(
        {"model_config": config, "model_repository": str(repo / model), "model_version": "1"}
    )
    shape = (1, CONFIG.image_size, CONFIG.image_size) if "detector" not in model else (1, 64, 48)
    rng = np.random.default_rng(0)
    batches = [rng.uniform(-1, 1, (n, *shape)).astype(np.float32) for n in (2, 3)]
    responses = served.execute([{"INPUT__0": _Tensor("INPUT__0", b)} for b in batches])
    want = load_served(repo, model)(torch.from_numpy(np.concatenate(batches)))
    want = want if isinstance(want, tuple) else (want,)
    assert [len(r) for r in responses] == [len(want)] * 2
    for index, expected in enumerate(want):
        got = np.concatenate([r[index].as_numpy() for r in responses])
        assert responses[0][index].name == f"OUTPUT__{index}"
        np.testing.assert_allclose(got, expected.detach().numpy(), atol=1e-5)


def _config_json(path: Path) -> str:
    """What Triton hands ``initialize`` as ``model_config``: the config as JSON (the names
    of the input and outputs are all ``model.py`` reads)."""
    text = path.read_text()
    inputs = re.findall(r'\{ name: "(INPUT__\d+)"', text)
    outputs = re.findall(r'\{ name: "(OUTPUT__\d+)"', text)
    return json.dumps(
        {"input": [{"name": n} for n in inputs], "output": [{"name": n} for n in outputs]}
    )
