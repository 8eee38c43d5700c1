"""The registry of model kinds: which trainer module trains each one.

``stainless-train`` (``train``), the Ray Train runs and jobs (``workload``) and evaluation
(``model_config``) all look a kind up here. Each module is imported when first asked for.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Protocol, cast

from stainless_training.config import ModelKind, TrainingConfig
from stainless_training.plumbing import SampleSource

__all__ = ["KINDS", "TrainerModule", "trainer_module"]

KINDS: dict[ModelKind, str] = {
    ModelKind.MTMD: "stainless_training.mtmd",
    ModelKind.DISENTANGLED: "stainless_training.disentangled",
    ModelKind.PAIRED: "stainless_training.paired",
}
"""Model kind → its trainer module."""


class TrainerModule(Protocol):
    """What every trainer module offers."""

    def workload(self, config: TrainingConfig, samples: SampleSource | None = None) -> Any:
        """Networks, optimisers and training cells of a run (a distributed ``Workload``)."""

    def train(self, config: TrainingConfig, out: Path, *, on_step: Any = None) -> Path:
        """Train in this process; checkpoints, config and metrics log go to ``out``."""

    def model_config(self, config: TrainingConfig) -> Any:
        """The network configuration of the run's size."""


def trainer_module(kind: ModelKind) -> TrainerModule:
    """The trainer module of ``kind``.

    Raises:
        KeyError: a kind with no trainer.
    """
    return cast("TrainerModule", importlib.import_module(KINDS[kind]))
