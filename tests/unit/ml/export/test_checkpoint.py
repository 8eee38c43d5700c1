from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from stainless.core.inference.manifest import read_manifest
from stainless.ml.export.checkpoint import ExportError, export_checkpoint
from stainless.ml.export.triton import InstanceKind

DEMO = Path(__file__).parents[4] / "training" / "demo_model"


def test_the_demo_model_exports_with_its_calibrated_threshold(tmp_path: Path) -> None:
    export_checkpoint(DEMO / "checkpoint.pt", tmp_path, instance=InstanceKind.CPU)
    manifest = read_manifest(tmp_path)
    calibrated = json.loads((DEMO / "metrics.json").read_text())["review_threshold"]
    assert manifest.model_version == "mtmd-tiny/1"
    assert manifest.review_threshold == pytest.approx(calibrated)
    assert "KIND_CPU" in (tmp_path / "stain_confidence" / "config.pbtxt").read_text()


def test_what_cannot_be_exported_says_why(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"config\.yaml"):
        export_checkpoint(tmp_path / "missing.pt", tmp_path / "repo")
    copy = tmp_path / "model"
    copy.mkdir()
    shutil.copy(DEMO / "checkpoint.pt", copy)
    shutil.copy(DEMO / "config.yaml", copy)
    with pytest.raises(ExportError, match="no review_threshold"):
        export_checkpoint(copy / "checkpoint.pt", tmp_path / "repo")
    (copy / "config.yaml").write_text("model: paired\n")
    with pytest.raises(ExportError, match="only model 1"):
        export_checkpoint(copy / "checkpoint.pt", tmp_path / "repo", review_threshold=0.5)
