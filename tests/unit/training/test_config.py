from __future__ import annotations

from pathlib import Path

import pytest

from stainless_training.config import (
    ConfigError,
    ModelKind,
    ModelSize,
    TrainingConfig,
    dump_config,
    load_config,
)
from stainless_training.paired import model_config

ROOT = Path(__file__).resolve().parents[3]


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
        ("model: mtmd\ndata: {classes: clinical}\n", "model 3's"),
        ("model: disentangled\ndata: {crop_size: 360}\n", "model 3's"),
        ("model: paired\ndata: {slide: nowhere}\n", "unknown slide preset 'nowhere'"),
        ("model: paired\ndata: {slide: blast-rich}\n", "set classes: clinical"),
        ("model: paired\ndata: {random_crop: 0.5}\n", "random_crop"),
        ("model: mtmd\nsize: small\n", "size small is model 3's"),
        ("model: disentangled\nsize: small\n", "size small is model 3's"),
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


def test_the_clinical_model_3_config_names_twelve_classes_and_360_px_crops() -> None:
    config = load_config(ROOT / "training/configs/paired-clinical.yaml")
    assert config.data.vocabulary().classes[:2] == ("NE", "EO")
    assert len(config.data.vocabulary().classes) == 12 and config.data.crop_size == 360
    assert config.data.phantom().class_frequencies.keys() == set(config.data.vocabulary().classes)


@pytest.mark.parametrize(
    ("name", "change"),
    [
        ("paired-clinical-stained-head.yaml", {"class_head": "stained"}),
        ("paired-clinical-class-conditioned.yaml", {"class_condition": True}),
    ],
)
def test_the_variant_configs_are_the_small_clinical_run_at_half_the_steps(
    name: str, change: dict[str, object]
) -> None:
    small = load_config(ROOT / "training/configs/paired-clinical-small.yaml")
    variant = load_config(ROOT / f"training/configs/{name}")
    for key, value in change.items():
        assert getattr(variant, key) == value != getattr(small, key)
    same = {key: getattr(small, key) for key in change} | {
        "steps": small.steps,
        "schedule": small.schedule,
    }
    assert variant.model_copy(update=same) == small and variant.steps == small.steps // 2
    net = model_config(variant)
    assert all(getattr(net, key) == value for key, value in change.items())


def test_the_model_3_options_are_refused_for_other_models() -> None:
    with pytest.raises(ValueError, match="class_head is model 3's"):
        TrainingConfig(model=ModelKind.MTMD, class_head="stained")
    with pytest.raises(ValueError, match="class_condition is model 3's"):
        TrainingConfig(model=ModelKind.MTMD, class_condition=True)


def test_the_small_clinical_config_is_the_clinical_run_at_128_px_for_twice_the_steps() -> None:
    tiny = load_config(ROOT / "training/configs/paired-clinical.yaml")
    small = load_config(ROOT / "training/configs/paired-clinical-small.yaml")
    assert small.size == ModelSize.SMALL and small.steps == 2 * tiny.steps
    assert [phase.steps for phase in small.schedule.phases] == [small.steps]
    same = {"size": tiny.size, "steps": tiny.steps, "schedule": tiny.schedule}
    assert small.model_copy(update=same) == tiny
    assert model_config(small).image_size == 128 and model_config(tiny).image_size == 64


def test_the_paired_label_transfer_config_is_the_label_transfer_run_with_that_loss() -> None:
    plain = load_config(ROOT / "training/configs/mtmd-transfer.yaml")
    paired = load_config(ROOT / "training/configs/mtmd-transfer-paired.yaml")
    assert paired.losses.paired_label_transfer > 0 == plain.losses.paired_label_transfer
    assert paired.model_copy(update={"losses": plain.losses}) == plain
