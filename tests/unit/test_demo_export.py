"""The demo exports its model again when the model, its metrics or the export code change."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from stainless.core.config import InferenceSettings, Settings
from stainless.core.inference.manifest import read_manifest
from stainless.demo import EXPORT_STAMP, _export_model, export_fingerprint

ROOT = Path(__file__).resolve().parents[2]


def test_the_demo_reexports_what_it_exported_and_leaves_other_repositories(
    tmp_path: Path,
) -> None:
    model = tmp_path / "model"
    shutil.copytree(ROOT / "training" / "demo_model", model)
    checkpoint = model / "checkpoint.pt"
    repo = tmp_path / "models"
    settings = Settings(inference=InferenceSettings(model_repository=str(repo)))
    _export_model(settings, checkpoint)
    assert (repo / EXPORT_STAMP).read_text() == export_fingerprint(checkpoint)
    manifest = repo / "stainless.json"
    written = manifest.stat().st_mtime_ns
    _export_model(settings, checkpoint)  # unchanged: not exported again
    assert manifest.stat().st_mtime_ns == written
    metrics = json.loads((model / "metrics.json").read_text())
    metrics["review_threshold"] = 0.125
    (model / "metrics.json").write_text(json.dumps(metrics))
    _export_model(settings, checkpoint)  # re-evaluated: exported again
    assert read_manifest(repo).review_threshold == 0.125
    (repo / EXPORT_STAMP).unlink()  # a repository the demo did not write
    metrics["review_threshold"] = 0.25
    (model / "metrics.json").write_text(json.dumps(metrics))
    _export_model(settings, checkpoint)
    assert read_manifest(repo).review_threshold == 0.125
