"""The metrics' backbones from a local path or an object-store key, named in the provenance."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
import torchvision

from stainless.core.config import EvaluationSettings
from stainless.core.storage.local import LocalObjectStore
from stainless_training.backbones import local_weights, quality_metrics


def _alexnet_bytes() -> tuple[bytes, dict[str, torch.Tensor]]:
    torch.manual_seed(7)
    state = torchvision.models.alexnet().state_dict()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue(), state


def test_backbones_come_from_the_object_store_and_say_so(tmp_path: Path) -> None:
    data, state = _alexnet_bytes()
    store = LocalObjectStore(tmp_path / "store")
    store.put("weights/alexnet.pth", data)
    settings = EvaluationSettings(
        lpips_backbone="store:weights/alexnet.pth", fid_weights="store:weights/alexnet.pth"
    )
    perceptual, fid = quality_metrics(settings, store)
    assert "store:weights/alexnet.pth" in perceptual.provenance
    assert "RANDOM" not in perceptual.provenance and "RANDOM" not in fid.provenance
    assert "store:weights/alexnet.pth" in fid.provenance
    first_conv = dict(perceptual._model.net.named_parameters())["slice1.0.weight"]
    assert torch.equal(first_conv, state["features.0.weight"])


def test_a_local_path_and_no_backbone(tmp_path: Path) -> None:
    data, _ = _alexnet_bytes()
    path = tmp_path / "alexnet.pth"
    path.write_bytes(data)
    perceptual, fid = quality_metrics(EvaluationSettings(lpips_backbone=str(path)))
    assert str(path) in perceptual.provenance and "RANDOM backbone" in fid.provenance
    perceptual, _ = quality_metrics(EvaluationSettings())
    assert "RANDOM backbone" in perceptual.provenance


def test_missing_backbones_are_clear_errors(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "store")
    with pytest.raises(FileNotFoundError, match="object store at 'weights/none"):
        quality_metrics(EvaluationSettings(lpips_backbone="store:weights/none.pth"), store)
    with pytest.raises(ValueError, match="none is configured"):
        local_weights("store:weights/a.pth", None, tmp_path / "a.pth")
    with pytest.raises(FileNotFoundError, match="not found"):
        quality_metrics(EvaluationSettings(fid_weights=str(tmp_path / "missing.pth")))
