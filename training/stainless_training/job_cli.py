"""``stainless-train-job JOB_ID``: run one queued training job (the entry point of a RayJob).

Inside a KubeRay RayJob the driver connects to the job's own Ray cluster (``RAY_ADDRESS``
is set by the submission); elsewhere to ``STAINLESS_RAY__ADDRESS`` or a local Ray. The
job row records the run (running, progress, then succeeded with its model version, or
failed with the reason); the exit status is 0 only when it succeeded.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from stainless.core.config import load_settings
from stainless.core.db.engine import create_db_engine
from stainless.core.db.models import JobStatus
from stainless.core.logs import configure_logging
from stainless.stages.retraining.jobs import JobError, get_job
from stainless_training.distributed import connect_ray, storage_for
from stainless_training.jobs import run_job
from stainless_training.settings import TrainingSettings

app = typer.Typer(pretty_exceptions_enable=False, add_completion=False)
err = Console(stderr=True)


@app.command()
def main(
    job_id: Annotated[str, typer.Argument(help="Id of a queued training job.")],
    rayjob: Annotated[
        str | None, typer.Option(help="Name of the RayJob running it, kept on the job row.")
    ] = None,
) -> None:
    """Train, evaluate and register the job's model on Ray."""
    import ray

    settings = load_settings(TrainingSettings)
    configure_logging(settings.log)
    try:
        job = get_job(create_db_engine(settings.database), job_id)
    except JobError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    if job.status is not JobStatus.QUEUED:
        err.print(f"[red]error:[/red] training job {job_id} is {job.status.value}, not queued")
        raise typer.Exit(2)
    connect_ray(settings)
    try:
        version = run_job(
            settings,
            job_id,
            storage=storage_for(settings),
            use_gpu=settings.ray.use_gpu,
            ray_job_id=rayjob,
        )
    except JobError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    except Exception as exc:  # noqa: BLE001 - run_job recorded it on the job row
        err.print(f"[red]training job {job_id} failed:[/red] {exc}")
        raise typer.Exit(1) from None
    finally:
        ray.shutdown()
    typer.echo(f"training job {job_id}: model version {version}")


def run() -> None:
    app()
