"""Run-folder helpers shared by the trainers: batch order, metrics log, the in-process loop."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Protocol, TextIO

import torch

from stainless_training.config import TrainingConfig, dump_config
from stainless_training.sampling import class_balanced_batches

CHECKPOINT = "checkpoint.pt"
Logs = dict[str, float]


class Steps(Protocol):
    """What the in-process loop drives (the Ray ``Workload`` is one)."""

    @property
    def labels(self) -> Sequence[int]: ...

    @property
    def batch_size(self) -> int: ...

    def step(self, indices: list[int], step: int) -> Logs: ...

    def state(self, step: int) -> dict[str, object]: ...

    def load(self, state: dict[str, object]) -> int: ...


def paired_cells(dataset: object, model: str) -> tuple[list[int], list[int]]:
    """Indices and classes of the cells with a brightfield pair (all of a phantom dataset).

    Raises:
        ValueError: no cell has a pair; ``model`` names who needs them.
    """
    labels: Sequence[int] = dataset.labels  # type: ignore[attr-defined]
    paired: Sequence[bool] | None = getattr(dataset, "has_pair", None)
    indices = [i for i in range(len(labels)) if paired is None or paired[i]]
    if not indices:
        raise ValueError(f"{model} needs cells with a brightfield pair; the dataset has none")
    return indices, [labels[i] for i in indices]


def train_in_process(
    config: TrainingConfig,
    out: Path,
    work: Steps,
    *,
    on_step: Callable[[int, Logs], None] | None = None,
    on_fresh_start: Callable[[], None] | None = None,
) -> Path:
    """Train ``work`` in this process; checkpoint, config and metrics log go to ``out``.

    A run finding ``out/checkpoint.pt`` continues from it and ends as the uninterrupted
    run would (the same batches; the trainers keep their noise and optimiser state in
    the checkpoint). ``on_fresh_start`` runs only when there is no checkpoint yet.
    """
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(dump_config(config))
    checkpoint = out / CHECKPOINT
    if checkpoint.exists():
        step = work.load(torch.load(checkpoint, weights_only=False))
    else:
        step = 0
        if on_fresh_start is not None:
            on_fresh_start()
    plan = batch_plan(work.labels, batch_size=work.batch_size, seed=config.seed)
    for _ in range(step):
        next(plan)
    with open_metrics(out / "metrics.jsonl", step) as log:
        while step < config.steps:
            epoch, indices = next(plan)
            logs = work.step(indices, step)
            log.write(json.dumps({"step": step, "epoch": epoch, **logs}) + "\n")
            step += 1
            if step % config.checkpoint_every == 0 or step == config.steps:
                log.flush()
                torch.save(work.state(step), checkpoint)
            if on_step is not None:
                on_step(step, logs)
    return checkpoint


def batch_plan(
    labels: Sequence[int], *, batch_size: int, seed: int
) -> Iterator[tuple[int, list[int]]]:
    """``(epoch, indices)`` of step 0, 1, 2 …: class-balanced epochs seeded ``seed + epoch``.

    A function of the step alone, so a resumed run sees the batches an uninterrupted one
    would (thesis ch. 8.2: every sample of a batch from a different class).
    """
    epoch = 0
    while True:
        for indices in class_balanced_batches(labels, batch_size=batch_size, seed=seed + epoch):
            yield epoch, indices
        epoch += 1


def batches_per_epoch(labels: Sequence[int], *, batch_size: int) -> int:
    """Steps in one class-balanced epoch (the same for every seed)."""
    return sum(1 for _ in class_balanced_batches(labels, batch_size=batch_size, seed=0))


def open_metrics(path: Path, start: int) -> TextIO:
    """Open the metrics log for appending, dropping the lines of steps ``start`` and later.

    After a crash the steps after the last checkpoint run again; their lines are replaced.
    """
    if path.exists():
        kept = [
            line
            for line in path.read_text().splitlines()
            if line.strip() and json.loads(line).get("step", -1) < start
        ]
        path.write_text("".join(line + "\n" for line in kept))
    return path.open("a")
