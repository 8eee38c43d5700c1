from __future__ import annotations

from pathlib import Path

import pytest

from stainless_training.config import (
    ConfigError,
    ModelKind,
    TrainingConfig,
    dump_config,
    load_config,
)


def test_yaml_round_trip(tmp_path: Path) -> None:
    config = TrainingConfig(model=ModelKind.MTMD, steps=60, seed=4)
    path = tmp_path / "config.yaml"
    path.write_text(dump_config(config))
    assert load_config(path) == config
    assert config.phased_schedule().total_steps == 60


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model: gan9000\n", "model"),
        ("model: mtmd\nbatch_size: 0\n", "batch_size"),
        ("model: mtmd\nlr: 3\n", "lr"),
        ("model: [unclosed\n", "cannot read"),
    ],
)
def test_bad_configs_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_config_is_frozen() -> None:
    config = TrainingConfig(model=ModelKind.PAIRED)
    with pytest.raises(ValueError, match="frozen"):
        config.seed = 3  # type: ignore[misc]
