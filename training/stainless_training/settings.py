"""What the training processes read: the trainer service, a Ray job, the training CLI."""

from __future__ import annotations

from stainless.core.config import (
    BusSettings,
    DatabaseSettings,
    EvaluationSettings,
    ProcessSettings,
    RaySettings,
    StoreSettings,
)

__all__ = ["TrainingSettings"]


class TrainingSettings(ProcessSettings):
    """Jobs and model versions in the database, snapshots and checkpoints in the store,
    ``training.requested`` on the bus, the Ray cluster, and the metrics' backbones."""

    database: DatabaseSettings = DatabaseSettings()
    store: StoreSettings = StoreSettings()
    bus: BusSettings = BusSettings()
    ray: RaySettings = RaySettings()
    evaluation: EvaluationSettings = EvaluationSettings()
