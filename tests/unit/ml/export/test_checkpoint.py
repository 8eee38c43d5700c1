from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from stainless.core.inference.manifest import read_manifest
from stainless.ml.export.checkpoint import ExportError, _model_1, export_checkpoint
from stainless.ml.export.triton import InstanceKind, load_served
from stainless.ml.models.configs import DisentangledConfig
from stainless.ml.models.disentangled import build_disentangled

ROOT = Path(__file__).parents[4]
DEMO = ROOT / "training" / "demo_model"


def test_the_demo_model_exports_with_its_calibrated_threshold(tmp_path: Path) -> None:
    export_checkpoint(DEMO / "checkpoint.pt", tmp_path, instance=InstanceKind.CPU)
    manifest = read_manifest(tmp_path)
    calibrated = json.loads((DEMO / "metrics.json").read_text())["review_threshold"]
    assert manifest.model_version == "mtmd-tiny/1"
    assert manifest.review_threshold == pytest.approx(calibrated)
    config = (tmp_path / "stain_confidence" / "config.pbtxt").read_text()
    assert "KIND_CPU" in config
    size = manifest.image_size  # warmed on a blank cell before Triton calls it ready
    assert 'batch_size: 1 count: 2 inputs { key: "INPUT__0"' in config
    assert f"dims: [ 1, {size}, {size} ] zero_data: true" in config


def test_the_demo_model_serves_its_calibrated_probabilities(tmp_path: Path) -> None:
    export_checkpoint(DEMO / "checkpoint.pt", tmp_path, instance=InstanceKind.CPU)
    assert read_manifest(tmp_path).calibrated_probabilities
    fitted = json.loads((DEMO / "metrics.json").read_text())["probability_calibration"]
    assert fitted["ece_calibrated"] <= 0.1 < fitted["ece_raw"]
    translator = _model_1(DEMO / "checkpoint.pt")[0].eval()
    dic = torch.rand(3, 1, 64, 64) * 2 - 1
    with torch.no_grad():
        logits = translator.classify(translator.encode(dic.expand(-1, 3, -1, -1)))
        scale, bias = fitted["scaling"]["scale"], torch.tensor(fitted["scaling"]["bias"])
        expected = torch.softmax(scale * logits + bias, dim=1)
        served = load_served(tmp_path, "stain_confidence", 1)(dic)[-1]
    assert torch.allclose(served, expected, atol=1e-5)


def test_what_cannot_be_exported_says_why(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"config\.yaml"):
        export_checkpoint(tmp_path / "missing.pt", tmp_path / "repo")
    copy = tmp_path / "model"
    copy.mkdir()
    shutil.copy(DEMO / "checkpoint.pt", copy)
    shutil.copy(DEMO / "config.yaml", copy)
    with pytest.raises(ExportError, match="no review_threshold"):
        export_checkpoint(copy / "checkpoint.pt", tmp_path / "repo")
    (copy / "config.yaml").write_text("model: paired\nsize: huge\n")
    with pytest.raises(ExportError, match="model 3 has no size 'huge'"):
        export_checkpoint(copy / "checkpoint.pt", tmp_path / "repo", review_threshold=0.5)
    (copy / "config.yaml").write_text("model: gan9000\n")
    with pytest.raises(ExportError, match=r"2 \(disentangled\) and 3 \(paired\) export"):
        export_checkpoint(copy / "checkpoint.pt", tmp_path / "repo", review_threshold=0.5)


def _model_2(folder: Path) -> Path:
    """A random tiny model-2 checkpoint with its config and a calibrated threshold."""
    folder.mkdir()
    shutil.copy(ROOT / "training" / "configs" / "disentangled-tiny.yaml", folder / "config.yaml")
    (folder / "metrics.json").write_text(json.dumps({"review_threshold": 1.25}))
    torch.manual_seed(0)
    translator = build_disentangled(DisentangledConfig.tiny())
    torch.save({"translator": translator.state_dict()}, folder / "checkpoint.pt")
    return folder / "checkpoint.pt"


def test_model_2_exports_with_a_model_1_classifier(tmp_path: Path) -> None:
    checkpoint = _model_2(tmp_path / "model-2")
    with pytest.raises(ExportError, match="model 2 has no classifier"):
        export_checkpoint(checkpoint, tmp_path / "repo")
    with pytest.raises(ExportError, match="is not model 1"):
        export_checkpoint(checkpoint, tmp_path / "repo", classifier=checkpoint)
    repo = tmp_path / "repo"
    folders = export_checkpoint(
        checkpoint, repo, instance=InstanceKind.CPU, classifier=DEMO / "checkpoint.pt"
    )
    assert [f.name for f in folders] == ["stain_confidence", "classify"]
    manifest = read_manifest(repo)
    assert manifest.model_version == "disentangled-tiny/1"
    assert manifest.confidence_variant == "disentangled" and manifest.classifier == "mtmd-tiny"
    assert (manifest.k, manifest.alpha, manifest.beta) == (20, 3.0, 7.0)
    assert manifest.review_threshold == 1.25
    assert (repo / "stain_confidence" / "1" / "model.pt").is_file()
