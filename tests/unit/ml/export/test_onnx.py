"""ONNX export: onnxruntime matches eager PyTorch within 1e-4, or the model stays TorchScript."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch
from torch import Tensor, nn

from stainless.domain.cells import CellClass
from stainless.ml.export import onnx as onnx_export
from stainless.ml.export import triton
from stainless.ml.export.heads import eager_models
from stainless.ml.export.onnx import OnnxModel, OnnxRejected, export_onnx
from stainless.ml.export.triton import (
    InstanceKind,
    Platform,
    load_served,
    model_config,
    write_repository,
)
from stainless.ml.models.configs import MultiTaskConfig
from stainless.ml.models.mtmd import build_multitask

CONFIG = MultiTaskConfig.tiny()
SIZE = CONFIG.image_size
INPUT = (1, SIZE, SIZE)
TOL = 1e-4


@pytest.fixture(scope="module")
def eager() -> dict[str, nn.Module]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        translator = build_multitask(CONFIG)
    return eager_models(translator, image_size=SIZE, k=4)


@pytest.mark.parametrize("name", ["stain", "classify", "segment"])
def test_onnx_matches_eager_at_batch_1_and_3(
    name: str, eager: dict[str, nn.Module], tmp_path: Path
) -> None:
    module = eager[name]
    path = tmp_path / "model.onnx"
    worst = export_onnx(module, path, input_shape=INPUT, n_outputs=1)
    assert worst < TOL
    graph = onnx.load(str(path))
    assert max(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert [i.name for i in graph.graph.input] == ["INPUT__0"]
    assert [o.name for o in graph.graph.output] == ["OUTPUT__0"]
    assert graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    served = OnnxModel(path)
    for batch in (1, 3):
        x = torch.rand(batch, *INPUT) * 2 - 1
        with torch.no_grad():
            want = module(x)
        got = served(x)
        assert isinstance(got, Tensor) and got.shape == want.shape
        assert (got - want).abs().max().item() < TOL, (name, batch)
    assert not module.training  # the export left the modules in eval mode


def test_stain_confidence_draws_noise_so_it_is_not_onnx(
    eager: dict[str, nn.Module], tmp_path: Path
) -> None:
    path = tmp_path / "model.onnx"
    with pytest.raises(OnnxRejected, match="RandomNormalLike"):
        export_onnx(eager["stain_confidence"], path, input_shape=INPUT, n_outputs=5)
    assert not path.exists()


class _TraceConstant(nn.Module):
    """Multiplies by the batch size, which tracing freezes at the example's (2)."""

    def forward(self, x: Tensor) -> Tensor:
        return x * float(x.shape[0])


def test_a_graph_onnxruntime_computes_differently_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    with pytest.raises(OnnxRejected, match=r"differs from eager PyTorch by .*tolerance 0\.0001"):
        export_onnx(_TraceConstant().eval(), path, input_shape=(1, 4, 4), n_outputs=1)
    assert not path.exists()


def test_a_training_module_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="eval-mode"):
        export_onnx(nn.Identity(), tmp_path / "model.onnx", input_shape=(1, 4, 4), n_outputs=1)


def _write(repo: Path, **kwargs: object) -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        translator = build_multitask(CONFIG)
    write_repository(
        translator,
        repo,
        name="mtmd-tiny",
        image_size=SIZE,
        classes=[c.value for c in CellClass],
        n_mask_classes=CONFIG.n_segmentation_classes,
        review_threshold=0.5,
        k=2,
        instance=InstanceKind.CPU,
        **kwargs,  # type: ignore[arg-type]
    )


def test_when_no_exporter_handles_a_graph_the_model_stays_torchscript(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*args: object) -> None:
        raise RuntimeError("unsupported operator aten::something")

    monkeypatch.setattr(onnx_export, "_export", fail)
    _write(tmp_path)
    for name in ("stain", "classify", "segment", "stain_confidence"):
        config = (tmp_path / name / "config.pbtxt").read_text()
        assert 'platform: "pytorch_libtorch"' in config
        assert config.splitlines()[-1] == (
            "# TorchScript, not ONNX: TorchScript-based exporter: RuntimeError: unsupported "
            "operator aten::something; torch.export-based exporter: RuntimeError: unsupported "
            "operator aten::something"
        )
        assert [p.name for p in (tmp_path / name / "1").iterdir()] == ["model.pt"]
    assert isinstance(load_served(tmp_path, "stain"), torch.jit.ScriptModule)


def test_a_new_export_replaces_the_other_format(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def stain_only(module: nn.Module, path: Path, **kwargs: object) -> float:
        if path.parent.parent.name != "stain":  # the others cost time and are tested above
            raise OnnxRejected("not tried in this test")
        return export_onnx(module, path, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(triton, "export_onnx", stain_only)
    stale = tmp_path / "stain" / "1" / "model.pt"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    _write(tmp_path)
    assert [p.name for p in stale.parent.iterdir()] == ["model.onnx"]
    assert isinstance(load_served(tmp_path, "stain"), OnnxModel)
    _write(tmp_path, onnx=False)
    assert [p.name for p in stale.parent.iterdir()] == ["model.pt"]
    assert "ONNX not tried" in (tmp_path / "stain" / "config.pbtxt").read_text()


def test_an_onnx_config_names_its_platform_and_runs_on_gpus_by_default() -> None:
    text = model_config(
        "stain",
        inputs=(triton.Tensor("INPUT__0", (1, 64, 64)),),
        outputs=(triton.Tensor("OUTPUT__0", (3, 64, 64)),),
        max_batch_size=16,
        instance=InstanceKind.GPU,
        platform=Platform.ONNX,
        note="ONNX: matches\nwithin 1e-6",
    )
    assert 'platform: "onnxruntime_onnx"' in text
    assert "instance_group [ { kind: KIND_GPU count: 1 } ]" in text
    assert "max_batch_size: 16" in text and "dynamic_batching" in text
    assert text.endswith("# ONNX: matches within 1e-6\n")
    assert Platform.ONNX.filename == "model.onnx" and Platform.TORCHSCRIPT.filename == "model.pt"
