"""Models 2 and 3 on a real local Ray cluster: two gradient-averaged workers, phantom cells.

Each run trains a few steps on 2 workers with checkpoints in a local storage folder;
the last checkpoint (and its frozen config) loads into a fresh workload at the final
step. Model 2's U-Net, pre-trained on every worker before the run (and rank 0's
broadcast), is the one a single one-thread process pre-trains from the same seed; with
more threads the float sums, and so the weights' last bits, may differ.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import torch

from stainless_training.config import (
    DataConfig,
    ModelKind,
    SegmenterConfig,
    TrainingConfig,
    load_config,
)
from stainless_training.distributed import CHECKPOINT, WORKLOADS, Storage, run_distributed
from stainless_training.schedules import Phase, PhasedSchedule

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# 4 steps, the generator trains at steps 1 and 3 (every 2nd), checkpoints at 2 and 4; one
# phantom field of seed 5 holds 4 cells of 3 classes
RUN = {
    "steps": 4,
    "checkpoint_every": 2,
    "batch_size": 2,
    "schedule": PhasedSchedule(
        critic_steps=2, phases=(Phase(name="adversarial", steps=4, learning_rate=1e-4),)
    ),
    "data": DataConfig(phantom_fields=1, phantom_seed=5),
}
CONFIGS = {
    ModelKind.DISENTANGLED: TrainingConfig(
        model=ModelKind.DISENTANGLED,
        segmenter=SegmenterConfig(pretrain_steps=2, batch_size=2),
        **RUN,
    ),
    ModelKind.PAIRED: TrainingConfig(model=ModelKind.PAIRED, balanced_fraction=0.5, **RUN),
}


@pytest.mark.parametrize("kind", list(CONFIGS), ids=lambda kind: kind.value)
def test_a_model_trains_on_two_workers_into_a_loadable_checkpoint(
    ray_address: str, kind: ModelKind, tmp_path: Path
) -> None:
    config = CONFIGS[kind]
    result = run_distributed(
        config,
        name=f"{kind.value}-{uuid.uuid4().hex[:6]}",
        storage=Storage(path=str(tmp_path / "ray")),
        workers=2,
        report_every=2,
    )
    assert result.metrics["step"] == 4 and result.metrics["workers"] == 2
    folder = Path(result.checkpoint)
    assert load_config(folder / "config.yaml") == config
    state = torch.load(folder / CHECKPOINT, weights_only=False)

    torch.manual_seed(config.seed)
    fresh = WORKLOADS[kind](config, None)
    untrained = [{k: v.clone() for k, v in m.state_dict().items()} for m in fresh.modules]
    assert fresh.load(state) == 4
    for before, module in zip(untrained, fresh.modules, strict=True):
        assert any(not torch.equal(before[k], v) for k, v in module.state_dict().items())
    logs = fresh.step(list(range(fresh.batch_size)), 4)  # and trains on from there
    assert all(torch.isfinite(torch.tensor(v)) for v in logs.values())

    if kind is ModelKind.DISENTANGLED:  # the U-Net every worker pre-trained from the seed
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as a Ray worker of one CPU: the same float sums
        try:
            torch.manual_seed(config.seed)
            alone = WORKLOADS[kind](config, None)
            alone.prepare()  # type: ignore[attr-defined]
        finally:
            torch.set_num_threads(threads)
        for name, value in alone.frozen[0].state_dict().items():  # type: ignore[attr-defined]
            assert torch.equal(state["segmenter"][name], value), name
