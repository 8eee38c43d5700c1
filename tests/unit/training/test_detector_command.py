"""``stainless-train detector``: a bad configuration is refused before Ray starts."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from stainless_training.cli import app


@pytest.mark.parametrize(
    ("arguments", "reason"),
    [
        (["--modality", "phase"], "modality"),
        (["--modality", "bf", "--config", "none.yaml"], "cannot read detector config"),
        (["--modality", "bf", "--config", "bad.yaml"], "crop_px"),
    ],
)
def test_a_bad_config_exits_2_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, arguments: list[str], reason: str
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.yaml").write_text("crop_px: 100\n")

    def no_ray(*_: object, **__: object) -> None:
        raise AssertionError("a refused run must not start")

    monkeypatch.setattr("stainless_training.detector_command.train", no_ray)
    result = CliRunner().invoke(app, ["detector", "--out", "run", *arguments])
    assert result.exit_code == 2, result.output
    assert reason in result.output and "error" in result.output
    assert not (tmp_path / "run").exists()


def test_a_dataset_that_cannot_be_read_is_refused_before_ray_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    def no_ray(*_: object, **__: object) -> None:
        raise AssertionError("a refused run must not start Ray")

    monkeypatch.setattr("stainless_training.detector_command.connect_ray", no_ray)
    key = "datasets/lab/" + "0" * 64 + ".json"
    arguments = ["detector", "--out", "run", "--modality", "bf", "--dataset", key]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 2, result.output
    assert "error" in result.output and "lab" in result.output
    assert not (tmp_path / "run").exists()


def test_calibrate_detector_stores_a_threshold_or_says_why_not(tmp_path: Path) -> None:
    import json

    import torch

    from stainless.ml.models.detector import (
        CHECKPOINT_FORMAT,
        DetectorConfig,
        build_cell_net,
        load_network,
    )

    config = DetectorConfig(width=4)
    path = tmp_path / "detector.pt"
    state = {"format": CHECKPOINT_FORMAT, "config": config.to_dict()}
    torch.save({**state, "state_dict": build_cell_net(config).state_dict()}, path)
    arguments = ["calibrate-detector", "--checkpoint", str(path), "--fields", "1", "--json"]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, result.output
    calibration = json.loads(result.stdout)
    assert load_network(path).threshold == calibration["threshold"]
    missing = CliRunner().invoke(app, ["calibrate-detector", "--checkpoint", "none.pt"])
    assert missing.exit_code == 2 and "not found" in missing.output
