"""The learned detectors in the model repository: written, read back, served at any size."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from stainless.ml.export.detector import (
    DETECTOR_MANIFEST,
    DetectorExportError,
    read_detector,
    write_detector,
)
from stainless.ml.export.triton import load_served
from stainless.ml.models.detector import (
    CHECKPOINT_FORMAT,
    DetectorConfig,
    LearnedDetector,
    Modality,
    ServedMaps,
    build_cell_net,
)


def _checkpoint(tmp_path: Path, modality: Modality) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    config = DetectorConfig(modality=modality, width=4)
    net = build_cell_net(config).eval()
    path = tmp_path / f"{modality}.pt"
    torch.save(
        {"format": CHECKPOINT_FORMAT, "state_dict": net.state_dict(), "config": config.to_dict()},
        path,
    )
    return path, net


@pytest.mark.parametrize("modality", list(Modality))
def test_an_exported_detector_serves_fields_of_any_size(tmp_path: Path, modality: Modality) -> None:
    checkpoint, net = _checkpoint(tmp_path, modality)
    repo = tmp_path / "models"
    served = write_detector(checkpoint, repo, threshold=0.4)
    assert read_detector(repo, modality) == served
    assert served.threshold == 0.4 and served.config.modality is modality
    config = (repo / served.name / "config.pbtxt").read_text()
    assert f"dims: [ {modality.channels}, -1, -1 ]" in config
    assert "model_warmup" not in config  # no size to warm up on: fields come in any
    model = load_served(repo, served.name, served.version)
    x = torch.randn(2, modality.channels, 96, 128)  # not the export's example size
    got = model(x)
    assert isinstance(got, torch.Tensor)
    with torch.no_grad():
        assert torch.allclose(got, ServedMaps(net)(x), atol=1e-4)


def test_the_served_and_the_eager_detector_find_the_same_cells(tmp_path: Path) -> None:
    checkpoint, _ = _checkpoint(tmp_path, Modality.BRIGHTFIELD)
    served = write_detector(checkpoint, tmp_path / "models")
    model = load_served(tmp_path / "models", served.name)
    image = np.random.default_rng(0).integers(150, 230, (200, 260, 3), dtype=np.uint8)
    eager = LearnedDetector.load(checkpoint, pixel_um=0.15, threshold=0.0, max_detections=5)
    remote = LearnedDetector(
        maps=lambda batch: model(torch.from_numpy(batch)).numpy(),  # type: ignore[union-attr]
        config=served.config,
        pixel_um=0.15,
        threshold=0.0,
        max_detections=5,
    )
    assert [d.box for d in remote.detect(image)] == [d.box for d in eager.detect(image)]


def test_reading_a_missing_or_wrong_detector_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(DetectorExportError, match="stainless export-detector"):
        read_detector(tmp_path, "dic")
    checkpoint, _ = _checkpoint(tmp_path, Modality.DIC)
    served = write_detector(checkpoint, tmp_path)
    manifest = tmp_path / served.name / DETECTOR_MANIFEST
    manifest.write_text(json.dumps({"format": "other"}))
    with pytest.raises(DetectorExportError, match="cannot be read"):
        read_detector(tmp_path, "dic")


def test_export_refuses_what_is_not_a_detector(tmp_path: Path) -> None:
    with pytest.raises(DetectorExportError, match="not found"):
        write_detector(tmp_path / "missing.pt", tmp_path)
    checkpoint, _ = _checkpoint(tmp_path, Modality.BRIGHTFIELD)
    with pytest.raises(DetectorExportError, match="threshold"):
        write_detector(checkpoint, tmp_path, threshold=1.5)


def test_a_detector_onnx_refuses_is_served_as_torchscript_at_any_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stainless.ml.export import detector as export_detector
    from stainless.ml.export.onnx import OnnxRejected

    def refuse(*_: object, **__: object) -> float:
        raise OnnxRejected("no exporter handles the graph")

    monkeypatch.setattr(export_detector, "export_onnx", refuse)
    checkpoint, net = _checkpoint(tmp_path, Modality.BRIGHTFIELD)
    served = write_detector(checkpoint, tmp_path / "models")
    folder = tmp_path / "models" / served.name
    assert "TorchScript, not ONNX" in (folder / "config.pbtxt").read_text()
    model = load_served(tmp_path / "models", served.name)
    x = torch.randn(1, 3, 80, 112)
    with torch.no_grad():
        assert torch.allclose(model(x), ServedMaps(net)(x), atol=1e-5)  # type: ignore[arg-type]
