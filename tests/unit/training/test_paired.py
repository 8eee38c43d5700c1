"""Model-3 training: class-balanced batches, frequency balancing at the end, exact resume."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from stainless_training import paired
from stainless_training.config import DataConfig, ModelKind, TrainingConfig
from stainless_training.paired import PairedBatch, PairedTrainer, train
from stainless_training.phantom_data import CellDataset, phantom_samples
from stainless_training.runs import CHECKPOINT, batch_plan, batches_per_epoch
from stainless_training.schedules import Phase, PhasedSchedule

# one phantom field of seed 5: 4 cells of 3 classes, 2 batches of 3 per epoch; 3 steps =
# 2 epochs, the last (half) frequency balanced; the generator trains at step 2
CONFIG = TrainingConfig(
    model=ModelKind.PAIRED,
    steps=3,
    checkpoint_every=2,
    batch_size=3,
    balanced_fraction=0.5,
    schedule=PhasedSchedule(
        critic_steps=3, phases=(Phase(name="paired", steps=3, learning_rate=2e-4),)
    ),
    data=DataConfig(phantom_fields=1, phantom_seed=5),
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


def test_a_crashed_run_resumes_to_the_uninterrupted_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    batches: list[list[int]] = []
    original = PairedTrainer.step

    def spy(self: PairedTrainer, batch: PairedBatch, step: int, *, balanced: bool) -> object:
        batches.append(batch.labels.tolist())
        return original(self, batch, step, balanced=balanced)

    monkeypatch.setattr(paired.PairedTrainer, "step", spy)
    whole, crashed = tmp_path / "whole", tmp_path / "crashed"
    seen: list[int] = []
    train(CONFIG, whole, on_step=lambda step, _: seen.append(step))
    assert seen == [1, 2, 3]
    assert len(batches) == 3 and all(len(set(labels)) == 3 for labels in batches)

    lines = _lines(whole)
    assert [line["step"] for line in lines] == [0, 1, 2]
    assert [line["epoch"] for line in lines] == [0, 0, 1]
    assert [line["frequency_balancing"] for line in lines] == [0.0, 0.0, 1.0]
    assert [line["step"] for line in lines if "generator_feature_matching" in line] == [2]
    for key in (
        "generator",
        "generator_reconstruction",
        "generator_classification",
        "critic_classification",
        "critic_classification_generated",
        "critic_gradient_penalty",
        "critic_wasserstein",
    ):
        assert key in lines[2]
    assert all(math.isfinite(v) for line in lines for v in line.values())
    assert (whole / "config.yaml").read_text().startswith("model: paired")

    with pytest.raises(Crash):
        train(CONFIG, crashed, on_step=_crash_after(2))  # dies after the checkpoint at 2
    assert torch.load(crashed / CHECKPOINT, weights_only=False)["step"] == 2
    train(CONFIG, crashed)
    assert [line["step"] for line in _lines(crashed)] == [0, 1, 2]
    after = torch.load(crashed / CHECKPOINT, weights_only=False)
    reference = torch.load(whole / CHECKPOINT, weights_only=False)
    assert after["step"] == reference["step"] == 3
    for part in ("generator", "critic"):
        for name, value in reference[part].items():
            assert torch.equal(after[part][name], value), f"{part}.{name}"


def test_the_batch_plan_repeats_class_balanced_epochs() -> None:
    labels = [0, 0, 0, 1, 2, 2, 3]
    plan = batch_plan(labels, batch_size=3, seed=4)
    per_epoch = batches_per_epoch(labels, batch_size=3)
    steps = [next(plan) for _ in range(2 * per_epoch + 1)]
    assert [epoch for epoch, _ in steps] == [0] * per_epoch + [1] * per_epoch + [2]
    assert all(len({labels[i] for i in batch}) == 3 for _, batch in steps)
    again = batch_plan(labels, batch_size=3, seed=4)
    assert [next(again) for _ in range(len(steps))] == steps


def test_a_run_with_the_class_head_on_the_stained_image_checkpoints_it(tmp_path: Path) -> None:
    config = CONFIG.model_copy(update={"class_head": "stained"})
    train(config, tmp_path)
    critic = torch.load(tmp_path / CHECKPOINT, weights_only=False)["critic"]
    assert any(key.startswith("image_classifier.") for key in critic)
    assert not any(".classifier." in key for key in critic)


def test_a_class_conditioned_run_trains_the_generators_classifier(tmp_path: Path) -> None:
    config = CONFIG.model_copy(update={"class_condition": True})
    logs: list[dict[str, float]] = []
    train(config, tmp_path, on_step=lambda _, step_logs: logs.append(step_logs))
    generator = torch.load(tmp_path / CHECKPOINT, weights_only=False)["generator"]
    assert any(key.startswith("class_encoder.") for key in generator)
    assert any(key.startswith("class_modulation.") for key in generator)
    losses = [entry["generator_dic_classification"] for entry in logs if "generator" in entry]
    assert losses and all(math.isfinite(loss) and loss > 0 for loss in losses)


def test_balancing_without_class_weights_is_refused() -> None:
    from stainless.ml.models.configs import PairedConfig
    from stainless.ml.models.paired import build_paired_discriminator, build_paired_generator
    from stainless_training.config import LossWeights

    config = PairedConfig.tiny()
    trainer = PairedTrainer(
        generator=build_paired_generator(config),
        critic=build_paired_discriminator(config),
        schedule=PhasedSchedule.scaled(6),
        weights=LossWeights(),
    )
    batch = PairedBatch(
        dic=torch.zeros(1, 1, 64, 64), bf=torch.zeros(1, 3, 64, 64), labels=torch.zeros(1).long()
    )
    with pytest.raises(ValueError, match="class_weights"):
        trainer.step(batch, 0, balanced=True)


def test_the_critic_learns_the_class_of_generated_cells_too() -> None:
    """AC-GAN (Odena et al.): the class CE on generated pairs falls as the critic trains."""
    from stainless.ml.models.configs import PairedConfig
    from stainless.ml.models.paired import build_paired_discriminator, build_paired_generator
    from stainless_training.config import LossWeights

    torch.manual_seed(0)
    config = PairedConfig.tiny()
    trainer = PairedTrainer(
        generator=build_paired_generator(config),
        critic=build_paired_discriminator(config),
        schedule=PhasedSchedule(
            critic_steps=1000, phases=(Phase(name="critic", steps=1000, learning_rate=1e-3),)
        ),
        weights=LossWeights(),
    )
    batch = PairedBatch(
        dic=torch.rand(3, 1, 64, 64), bf=torch.rand(3, 3, 64, 64), labels=torch.tensor([0, 1, 2])
    )
    losses = [trainer.step(batch, step)["critic_classification_generated"] for step in range(1, 41)]
    assert losses[-1] < 0.5 * losses[0]


class _HalfPaired:
    """Phantom cells of which every other one has no brightfield pair."""

    def __init__(self, image_size: int) -> None:
        self._cells = CellDataset(phantom_samples(fields=1, seed=5, image_size=image_size))

    @property
    def labels(self) -> list[int]:
        return self._cells.labels

    @property
    def has_pair(self) -> list[bool]:
        return [i % 2 == 0 for i in range(len(self._cells))]

    def __len__(self) -> int:
        return len(self._cells)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self._cells[index]


def test_the_workload_trains_on_cells_with_a_pair_and_balances_by_step() -> None:
    torch.manual_seed(0)
    work = paired.workload(CONFIG, _HalfPaired)
    cells = _HalfPaired(64)
    assert work.labels == [cells.labels[i] for i in range(0, len(cells), 2)]
    assert work.modules == [work.trainer.generator, work.trainer.critic]
    steps = CONFIG.steps
    assert [work.epoch(s) for s in range(steps)] == [s // work.per_epoch for s in range(steps)]
    logs = work.step([0, 1], 0)
    assert logs["frequency_balancing"] == 0.0 and math.isfinite(logs["critic_wasserstein"])
