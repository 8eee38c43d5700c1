"""``stainless-train detector``: train the learned white-cell detector on Ray Train.

The run always goes through Ray, one worker or many (the same checkpoints, the same
restart of failed workers from the last one, the same code path on a laptop and on a
cluster). Its checkpoints stay in Ray's storage (``STAINLESS_RAY__STORAGE``: a local
folder, or a prefix of the S3 bucket); the last one becomes ``OUT/detector.pt`` and
``OUT/detector.yaml``, what ``train_detector`` writes in one process.
"""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from stainless.core.storage import create_store
from stainless_training.detector import (
    DetectorTrainConfig,
    annotated_fields,
    detector_from_checkpoint,
)
from stainless_training.distributed import (
    connect_ray,
    run_distributed,
    storage_for,
    store_payload,
)
from stainless_training.settings import TrainingSettings

__all__ = ["train"]


def train(
    settings: TrainingSettings,
    config: DetectorTrainConfig,
    out: Path,
    *,
    workers: int,
    ray_address: str | None,
    console: Console,
) -> Path:
    """Train ``config`` on ``workers`` Ray workers with a progress bar; return ``out/detector.pt``.

    Connects to Ray (``ray_address``, the settings, or a local Ray) unless this process
    already is, and disconnects again if it connected. A run on a lab's annotated fields
    (``config.dataset``) reads them from the settings' object store, on every worker.

    Raises:
        DatasetError: the run's dataset cannot be read or is of the other modality.
    """
    import ray

    store = None
    if config.dataset is not None:  # refuse a bad dataset before Ray starts
        annotated = annotated_fields(config, create_store(settings.store))
        console.print(f"dataset {config.dataset}: {len(annotated)} annotated fields")
        store = store_payload(settings.store)
    name = f"detector-{config.modality}-{uuid.uuid4().hex[:8]}"
    storage = storage_for(settings)
    console.print(
        f"run {name}: {config.steps} steps of {config.batch_size} crops on {workers} worker(s), "
        f"checkpoints in {storage.path}"
    )
    connected = not ray.is_initialized()
    if connected:
        connect_ray(settings, ray_address)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    try:
        with Progress(*columns, TimeRemainingColumn(), console=console) as bar:
            task = bar.add_task("steps", total=config.steps)

            def show(values: dict[str, Any]) -> None:
                loss = values.get("detection")
                shown = "steps" if loss is None else f"steps (loss {loss:.3f})"
                bar.update(task, completed=values["step"], description=shown)

            result = run_distributed(
                config,
                name=name,
                storage=storage,
                workers=workers,
                use_gpu=settings.ray.use_gpu,
                report_every=max(1, config.steps // 100),  # ~100 updates of the bar
                on_progress=show,
                store=store,
            )
        with tempfile.TemporaryDirectory() as folder:
            path = detector_from_checkpoint(storage.fetch(result.checkpoint, Path(folder)), out)
    finally:
        if connected:
            ray.shutdown()
    loss = result.metrics.get("detection")
    console.print(
        f"trained in {result.seconds:.0f} s"
        + ("" if loss is None else f", last loss {loss:.3f}")
        + f"; wrote {path} and {path.with_suffix('.yaml')}"
    )
    return path
