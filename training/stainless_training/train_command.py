"""``stainless-train ray``: request a training job and run it on Ray, with a progress bar."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from stainless.core.db.engine import create_db_engine
from stainless.core.storage import create_store
from stainless.stages.retraining.jobs import get_job, model_kind, request_training
from stainless_training.distributed import connect_ray, storage_for
from stainless_training.jobs import job_config, run_job
from stainless_training.settings import TrainingSettings


def base_config(path: Path | None, *, steps: int | None) -> dict[str, Any]:
    """Training settings from a YAML file (its model and data are the job's), and --steps."""
    data: dict[str, Any] = yaml.safe_load(path.read_text()) if path is not None else {}
    data.pop("model", None)
    data.pop("data", None)
    if steps is not None:
        data["steps"] = steps
    return data


def train(
    settings: TrainingSettings,
    *,
    model: str,
    dataset: str,
    workers: int,
    ray_address: str | None,
    config: dict[str, Any],
    console: Console,
) -> str:
    """Create the job (row + ``training.requested``), run it on Ray; return the model version id.

    Raises:
        JobError: the request is refused (nothing written).
    """
    import ray

    # Refuse a bad request before anything is written or started.
    job_config(config, model=model_kind(model).value, dataset_key=dataset)
    engine = create_db_engine(settings.database)
    job = request_training(
        engine,
        create_store(settings.store),
        model=model,
        dataset_key=dataset,
        workers=workers,
        config=config,
    )
    console.print(f"training job {job.id}: {model} on {dataset}, {workers} worker(s)")
    if not ray.is_initialized():
        connect_ray(settings, ray_address)
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["version"] = run_job(
                settings, job.id, storage=storage_for(settings), use_gpu=settings.ray.use_gpu
            )
        except Exception as exc:  # noqa: BLE001 - reported below, the job row says failed
            outcome["error"] = exc

    runner = threading.Thread(target=work, name=f"job-{job.id}")
    runner.start()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeRemainingColumn(), console=console) as bar:
        task = bar.add_task("steps", total=None)
        while runner.is_alive():
            runner.join(timeout=1.0)
            progress = get_job(engine, job.id).progress
            if "steps" in progress:
                bar.update(task, completed=progress.get("step", 0), total=progress["steps"])
    if "error" in outcome:
        raise outcome["error"]
    return str(outcome["version"])
