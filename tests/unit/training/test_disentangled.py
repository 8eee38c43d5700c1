"""Model-2 training: passes run, losses are finite, the U-Net stays frozen, runs resume."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from stainless.ml.models.configs import DisentangledConfig
from stainless.ml.models.disentangled import (
    STAINED,
    UNSTAINED,
    build_disentangled,
    build_disentangled_discriminator,
)
from stainless.ml.models.segmentation import build_segmenter
from stainless_training.config import (
    DataConfig,
    LossWeights,
    ModelKind,
    SegmenterConfig,
    TrainingConfig,
)
from stainless_training.disentangled import (
    Batch,
    DisentangledTrainer,
    train,
    workload,
)
from stainless_training.runs import CHECKPOINT
from stainless_training.schedules import Phase, PhasedSchedule

# 3 steps, the translator trains at step 2 (every 3rd), a checkpoint before it; one
# phantom field of seed 5 holds 4 cells of 3 classes
CONFIG = TrainingConfig(
    model=ModelKind.DISENTANGLED,
    steps=3,
    checkpoint_every=2,
    batch_size=2,
    schedule=PhasedSchedule(
        critic_steps=3, phases=(Phase(name="adversarial", steps=3, learning_rate=1e-4),)
    ),
    data=DataConfig(phantom_fields=1, phantom_seed=5),
    segmenter=SegmenterConfig(pretrain_steps=3, batch_size=2),
)


class Crash(RuntimeError):
    pass


def _crash_after(stop: int) -> Callable[[int, dict[str, float]], None]:
    def on_step(step: int, _: dict[str, float]) -> None:
        if step == stop:
            raise Crash

    return on_step


def _lines(run: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_crashed_run_resumes_to_the_uninterrupted_result_with_the_unet_frozen(
    tmp_path: Path,
) -> None:
    whole, crashed = tmp_path / "whole", tmp_path / "crashed"
    seen: list[int] = []
    train(CONFIG, whole, on_step=lambda step, _: seen.append(step))
    assert seen == [1, 2, 3]
    lines = _lines(whole)
    assert [line["step"] for line in lines] == [0, 1, 2]
    assert [line["step"] for line in lines if "generator_cycle_both" in line] == [2]
    for key in (
        "generator",
        "generator_style",
        "generator_structure",
        "generator_structure_generated",
        "generator_diversity_style",
        "generator_cycle_structure",
        "critic_gradient_penalty",
    ):
        assert key in lines[2]
    assert all(math.isfinite(v) for line in lines for v in line.values())
    assert lines[2]["generator_diversity_both"] <= 0  # −λ · L1 (eq. 6.4)
    assert (whole / "segmenter_metrics.jsonl").read_text().count("segmenter_step") == 3
    assert (whole / "config.yaml").read_text().startswith("model: disentangled")

    with pytest.raises(Crash):
        train(CONFIG, crashed, on_step=_crash_after(2))  # dies after the checkpoint at 2
    before = torch.load(crashed / CHECKPOINT, weights_only=False)
    assert before["step"] == 2
    train(CONFIG, crashed)
    assert [line["step"] for line in _lines(crashed)] == [0, 1, 2]

    after = torch.load(crashed / CHECKPOINT, weights_only=False)
    reference = torch.load(whole / CHECKPOINT, weights_only=False)
    assert after["step"] == reference["step"] == 3
    for part in ("translator", "critic", "segmenter"):
        for name, value in reference[part].items():
            assert torch.equal(after[part][name], value), f"{part}.{name}"
    # the translator step 2 ran between the two checkpoints; the U-Net did not move
    for name, value in before["segmenter"].items():
        assert torch.equal(after["segmenter"][name], value), name
    assert any(
        not torch.equal(after["translator"][name], value)
        for name, value in before["translator"].items()
    )


def test_a_given_unet_checkpoint_is_loaded_instead_of_pretrained(tmp_path: Path) -> None:
    source = build_segmenter(DisentangledConfig.tiny())
    torch.save({"segmenter": source.state_dict()}, tmp_path / "unet.pt")
    config = CONFIG.model_copy(
        update={
            "steps": 1,
            "segmenter": SegmenterConfig(checkpoint=str(tmp_path / "unet.pt")),
        }
    )
    train(config, tmp_path / "run")
    assert not (tmp_path / "run" / "segmenter_metrics.jsonl").exists()
    state = torch.load(tmp_path / "run" / CHECKPOINT, weights_only=False)
    for name, value in source.state_dict().items():
        assert torch.equal(state["segmenter"][name], value)


def test_a_trainable_unet_is_refused() -> None:
    config = DisentangledConfig.tiny()
    with pytest.raises(ValueError, match="frozen"):
        DisentangledTrainer(
            translator=build_disentangled(config),
            critic=build_disentangled_discriminator(config),
            structure_critic=build_segmenter(config),
            schedule=PhasedSchedule.scaled(6),
            weights=LossWeights(),
        )


def _items(paired: list[bool], masked: list[bool], size: int = 8) -> dict[str, torch.Tensor]:
    n = len(paired)
    return {
        "dic": torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, size, size),
        "bf": 10 + torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 3, size, size),
        "mask": torch.ones(n, size, size, dtype=torch.long),
        "label": torch.arange(n),
        "has_pair": torch.tensor(paired),
        "has_mask": torch.tensor(masked),
    }


def test_a_batch_takes_the_dic_crop_of_every_cell_and_brightfield_only_of_pairs() -> None:
    batch = Batch.from_items(_items([True, False, True], [True, True, False]))
    # 3 DIC crops, then the brightfield crops of cells 0 and 2
    assert [float(image[0, 0, 0]) for image in batch.images] == [0, 1, 2, 10, 12]
    assert batch.source.tolist() == [UNSTAINED] * 3 + [STAINED] * 2
    assert batch.target.tolist() == [STAINED] * 3 + [UNSTAINED] * 2
    # the penalty's real target image: the own pair, another cell's for cell 1; DIC for BF
    assert [float(image[0, 0, 0]) for image in batch.pairs] == [10, 10, 12, 0, 2]
    # cell 2 has no mask: its pixels (DIC and brightfield) are ignored
    assert [int(mask[0, 0]) for mask in batch.masks] == [1, 1, -1, 1, -1]

    alone = Batch.from_items(_items([False, False], [True, True]))
    assert alone.images.shape[0] == 2 and torch.equal(alone.pairs, alone.images)


def test_the_workload_averages_translator_and_critic_but_not_the_frozen_unet() -> None:
    config = CONFIG.model_copy(update={"segmenter": SegmenterConfig(pretrain_steps=1)})
    torch.manual_seed(config.seed)
    work = workload(config)
    assert work.modules == [work.trainer.translator, work.trainer.critic]
    assert work.frozen == [work.trainer.structure_critic]
    work.prepare()  # pre-trains the U-Net and freezes it again
    unet = work.trainer.structure_critic
    assert not unet.training and not any(p.requires_grad for p in unet.parameters())
    torch.manual_seed(config.seed)
    again = workload(config)
    again.prepare()
    for name, value in unet.state_dict().items():  # the same weights on every worker
        assert torch.equal(again.trainer.structure_critic.state_dict()[name], value), name
