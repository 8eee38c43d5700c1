"""The learned detector on a real local Ray cluster: 2 workers → detector.pt → served model.

``stainless-train detector`` trains a tiny detector on 2 gradient-averaged workers with
checkpoints in a local storage folder; its ``detector.pt`` is exported into a model
repository and served in this process on a phantom field. (Resuming is checked without
Ray, exactly, in ``tests/unit/training/test_detector.py``: another Ray run here would
cost about 25 s.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from stainless.imaging.phantom import generate_field
from stainless.imaging.phantom_set import field_rng, phantom_config
from stainless.ml.export.detector import read_detector, write_detector
from stainless.ml.export.triton import InstanceKind, load_served
from stainless.ml.models.detector import LearnedDetector
from stainless_training.cli import app
from stainless_training.detector import DetectorTrainConfig
from stainless_training.runs import CHECKPOINT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TINY = DetectorTrainConfig(
    steps=4,
    batch_size=2,
    crop_px=64,
    field_um=24.0,  # 320 px fields: 80 working px, room for a 64 px crop
    pool_size=2,
    refresh_every=2,
    width=8,
    warmup_steps=1,
    checkpoint_every=2,
    random_acquisition_fraction=0.0,
)


def test_the_cli_trains_on_two_workers_into_a_served_detector(
    ray_address: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STAINLESS_RAY__STORAGE", str(tmp_path / "ray"))
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY.model_dump(mode="json", exclude={"modality"})))
    out = tmp_path / "out"
    arguments = ["--modality", "bf", "--out", str(out), "--workers", "2", "--config", str(config)]
    result = CliRunner().invoke(app, ["detector", *arguments])
    assert result.exit_code == 0, result.output
    assert "2 worker(s)" in result.output and "wrote" in result.output
    assert (yaml.safe_load((out / "detector.yaml").read_text())) == TINY.model_dump(mode="json")
    assert list((tmp_path / "ray").rglob(CHECKPOINT))  # the run's checkpoints stay in storage

    repo = tmp_path / "models"
    served = write_detector(out / "detector.pt", repo, instance=InstanceKind.CPU, threshold=0.0)
    assert read_detector(repo, "bf") == served and served.config.width == 8
    model = load_served(repo, served.name, served.version)
    detector = LearnedDetector(
        maps=lambda batch: model(torch.from_numpy(batch)).numpy(),  # type: ignore[union-attr]
        config=served.config,
        pixel_um=0.075,
        threshold=0.0,
        max_detections=3,
    )
    field = generate_field(phantom_config(width=256, height=256), field_rng(9, 0, 0))
    found = detector.detect(field.bf)
    assert len(found) == 3 and all(0 <= d.score <= 1 for d in found)
    eager = LearnedDetector.load(out / "detector.pt", pixel_um=0.075, threshold=0.0)
    assert np.allclose(detector.maps(field.bf)[0], eager.maps(field.bf)[0], atol=1e-4)
