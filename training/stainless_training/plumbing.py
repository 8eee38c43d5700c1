"""What the three translator trainers share: their samples, their checkpoint state and the
parts of a workload that do not depend on the model.

* ``Samples`` / ``SampleSource``: training cells as ``CellDataset`` gives them, for an
  image size (a dataset snapshot), or phantom cells when none is given.
* ``save_state`` / ``load_state``: a trainer's checkpoint from named parts (networks and
  optimisers) plus its random generator and step.
* ``TrainerWorkload``: a trainer and its samples as a
  :class:`~stainless_training.distributed.Workload` (device moves, state, classes); a model
  adds its networks, optimisers and step.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

import torch
from torch import Tensor, nn

__all__ = [
    "SampleSource",
    "Samples",
    "Stateful",
    "TrainerState",
    "TrainerWorkload",
    "load_state",
    "save_state",
]

Logs = dict[str, float]


class Samples(Protocol):
    """Training cells: items as ``CellDataset`` gives them, and their classes."""

    @property
    def labels(self) -> list[int]: ...

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> dict[str, Tensor]: ...


SampleSource = Callable[[int], Samples]
"""Image size → training cells (a dataset snapshot)."""


class Stateful(Protocol):
    """A network or an optimiser."""

    def state_dict(self) -> Any: ...

    def load_state_dict(self, state_dict: Any, /) -> Any: ...


def save_state(
    step: int, random: torch.Generator, parts: Mapping[str, Stateful]
) -> dict[str, object]:
    """A checkpoint: ``step``, every part's state under its name, and ``random``."""
    return {
        "step": step,
        **{name: part.state_dict() for name, part in parts.items()},
        "random": random.get_state(),
    }


def load_state(
    state: Mapping[str, object], random: torch.Generator, parts: Mapping[str, Stateful]
) -> int:
    """Restore ``parts`` and ``random`` from a ``save_state`` checkpoint; return its step."""
    for name, part in parts.items():
        part.load_state_dict(state[name])
    random.set_state(state["random"])  # type: ignore[arg-type]
    return int(state["step"])  # type: ignore[call-overload,no-any-return]


class TrainerState(Protocol):
    """A trainer whose state a checkpoint holds."""

    def state(self, step: int) -> dict[str, object]: ...

    def load(self, state: dict[str, object]) -> int: ...


class TrainerWorkload:
    """The model-independent half of a workload: device, classes, state.

    Subclasses set ``modules`` and ``optimizers`` (and ``frozen``: networks every worker
    needs identical but nobody trains) and define ``step``.
    """

    batch_size: int

    def __init__(self, trainer: TrainerState, dataset: Samples, labels: list[int]) -> None:
        self.trainer = trainer
        self.dataset = dataset
        self._labels = labels
        self.device = torch.device("cpu")

    @property
    def modules(self) -> list[nn.Module]:
        raise NotImplementedError

    @property
    def optimizers(self) -> list[torch.optim.Optimizer]:
        raise NotImplementedError

    @property
    def frozen(self) -> list[nn.Module]:
        return []

    @property
    def labels(self) -> list[int]:
        return self._labels

    def to(self, device: torch.device) -> None:
        for module in [*self.modules, *self.frozen]:
            module.to(device)
        self.device = device

    def state(self, step: int) -> dict[str, object]:
        return self.trainer.state(step)

    def load(self, state: dict[str, object]) -> int:
        return self.trainer.load(state)
