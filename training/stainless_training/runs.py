"""Run-folder helpers shared by the trainers of models 2 and 3: batch order and metrics log."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TextIO

from stainless_training.sampling import class_balanced_batches


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
