"""Model-1 training: the schedule's passes run, losses are logged, and a run resumes."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from stainless_training.config import DataConfig, ModelKind, TrainingConfig
from stainless_training.mtmd import train
from stainless_training.runs import CHECKPOINT


def test_a_short_run_logs_every_pass_and_resumes(tmp_path: Path) -> None:
    config = TrainingConfig(
        model=ModelKind.MTMD,
        steps=6,
        checkpoint_every=3,
        batch_size=3,
        data=DataConfig(phantom_fields=2, phantom_seed=1),
    )
    seen: list[int] = []
    checkpoint = train(config, tmp_path, on_step=lambda step, _: seen.append(step))
    assert seen == [1, 2, 3, 4, 5, 6]
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == list(range(6))
    # scaled schedule over 6 steps: 1 pretrain, 3 adversarial, 2 supervised; G every 5th step
    generator_steps = [line["step"] for line in lines if "generator_cycle" in line]
    assert generator_steps == [4]
    assert "classification" in lines[4] and "segmentation" in lines[4]
    assert all(line["critic_gradient_penalty"] >= 0 for line in lines)
    state = torch.load(checkpoint, weights_only=False)
    assert state["step"] == 6 and checkpoint.name == CHECKPOINT
    assert (tmp_path / "config.yaml").read_text().startswith("model: mtmd")

    longer = config.model_copy(update={"steps": 8})
    train(longer, tmp_path, on_step=lambda step, _: seen.append(step))
    assert seen[6:] == [7, 8]
    assert torch.load(checkpoint, weights_only=False)["step"] == 8
