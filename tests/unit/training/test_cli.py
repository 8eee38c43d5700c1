from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from stainless_training.cli import app
from stainless_training.job_cli import app as job_app

ROOT = Path(__file__).resolve().parents[3]


def test_bad_configs_exit_with_a_message(tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(
        app, ["local", "--config", str(tmp_path / "none.yaml"), "--out", str(tmp_path)]
    )
    assert missing.exit_code == 2 and "cannot read training config" in missing.output
    short = tmp_path / "short.yaml"
    short.write_text("model: paired\nsteps: 2\n")  # too short for the thesis phases
    refused = runner.invoke(app, ["local", "--config", str(short), "--out", str(tmp_path / "run")])
    assert refused.exit_code == 2 and "at least 6 steps" in refused.output
    no_unet = tmp_path / "no-unet.yaml"
    no_unet.write_text(f"model: disentangled\nsegmenter: {{checkpoint: {tmp_path / 'x.pt'}}}\n")
    refused = runner.invoke(
        app, ["local", "--config", str(no_unet), "--out", str(tmp_path / "run")]
    )
    assert refused.exit_code == 2 and "no file" in refused.output
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("model", ["disentangled", "paired"])
def test_each_kind_trains_two_steps(tmp_path: Path, model: str) -> None:
    config = {
        "model": model,
        "steps": 2,
        "batch_size": 2,
        "schedule": {
            "critic_steps": 2,
            "phases": [{"name": "only", "steps": 2, "learning_rate": 1e-4}],
        },
        "data": {"phantom_fields": 1, "phantom_seed": 5},
        "segmenter": {"pretrain_steps": 1, "batch_size": 2},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(
        app, ["local", "--config", str(path), "--out", str(tmp_path / "run")]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "checkpoint.pt").exists()
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [0, 1]
    assert "generator" in json.loads(lines[1])
    assert (tmp_path / "run" / "config.yaml").read_text().startswith(f"model: {model}")


@pytest.mark.parametrize("name", ["mtmd-tiny", "disentangled-tiny", "paired-tiny", "mtmd-transfer"])
def test_the_shipped_tiny_configs_load(name: str) -> None:
    from stainless_training.config import load_config

    config = load_config(ROOT / "training" / "configs" / f"{name}.yaml")
    assert config.model.value == name.split("-")[0]
    assert config.phased_schedule().total_steps == config.steps


def test_a_training_job_that_is_not_queued_is_refused_before_ray_starts(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STAINLESS_DATABASE__URL", sqlite_url)
    missing = CliRunner().invoke(job_app, ["no-such-job"])
    assert missing.exit_code == 2 and "no training job no-such-job" in missing.output


def test_a_registered_version_is_announced_by_the_name_to_promote(
    tmp_path: Path, sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from sqlmodel import Session

    from stainless.core.config import DatabaseSettings
    from stainless.core.db.engine import create_db_engine
    from stainless.core.db.migrate import upgrade
    from stainless.core.db.models import ModelStatus, ModelVersion
    from stainless.core.registry import registered
    from stainless_training.cli import _announce
    from stainless_training.settings import TrainingSettings

    upgrade(sqlite_url)
    settings = TrainingSettings(database=DatabaseSettings(url=sqlite_url))
    engine = create_db_engine(settings.database)
    served = registered(engine, name="mtmd-tiny", kind="mtmd", checkpoint_key="a", metrics={})
    with Session(engine) as session:
        row = session.get(ModelVersion, served.id)
        assert row is not None
        row.status = ModelStatus.PROMOTED
        session.add(row)
        session.commit()
    comparison = {"model_version_id": served.id, "model": "mtmd-tiny/1", "cells": 40}
    metrics = {"accuracy": 0.1, "comparison": {**comparison, "accuracy": 0.8}}
    new = registered(engine, name="mtmd-tiny", kind="mtmd", checkpoint_key="b", metrics=metrics)
    _announce(settings, new.id)
    captured = capsys.readouterr()
    assert captured.out == "mtmd-tiny/2\n"
    said = " ".join(captured.err.split())
    assert "registered mtmd-tiny/2" in said and "stainless promote mtmd-tiny/2" in said
    assert "not promotable: mtmd-tiny/2 is worse than the served mtmd-tiny/1" in said
