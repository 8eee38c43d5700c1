from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from stainless_training.cli import app

ROOT = Path(__file__).resolve().parents[3]


def test_bad_or_unavailable_configs_exit_with_a_message(tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(app, ["--config", str(tmp_path / "none.yaml"), "--out", str(tmp_path)])
    assert missing.exit_code == 2 and "cannot read training config" in missing.output
    other = tmp_path / "paired.yaml"
    other.write_text("model: paired\n")
    refused = runner.invoke(app, ["--config", str(other), "--out", str(tmp_path / "run")])
    assert refused.exit_code == 2 and "not available yet" in refused.output
    assert not (tmp_path / "run").exists()


def test_the_shipped_tiny_config_loads() -> None:
    from stainless_training.config import load_config

    config = load_config(ROOT / "training" / "configs" / "mtmd-tiny.yaml")
    assert config.phased_schedule().total_steps == config.steps
