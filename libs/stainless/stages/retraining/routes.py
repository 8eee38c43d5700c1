"""Training routes of the results API: request retraining, follow it, list model versions.

``POST /v1/training-jobs`` (scientist) checks the request, writes the job row and
``training.requested`` together; the training service runs it on Ray and writes its
progress (step, losses, samples/s, ETA) to the row, read by ``GET``.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from stainless.core.audit import record_audit
from stainless.core.db.models import TrainingJob
from stainless.core.http.auth import Reader, Scientist, actor
from stainless.core.http.errors import Invalid, NotFound
from stainless.core.http.params import JobId
from stainless.core.registry import list_versions
from stainless.core.storage import ObjectStore
from stainless.stages.retraining.jobs import JobError, get_job, request_training

DATASET_KEY = r"^[A-Za-z0-9][A-Za-z0-9._/-]*\.json$"
MAX_WORKERS = 256  # far above any cluster this runs on; a typo is refused, not queued
MAX_STEPS = 10_000_000  # the thesis trained for well under a million


class TrainingRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(max_length=32, description="mtmd, disentangled or paired.")
    dataset: str = Field(
        pattern=DATASET_KEY,
        max_length=256,
        description="Dataset snapshot key (datasets/<name>/<sha256>.json).",
    )
    workers: int = Field(default=1, ge=1, le=MAX_WORKERS, description="Ray Train workers.")
    steps: int | None = Field(default=None, ge=1, le=MAX_STEPS, description="Optimisation steps.")


def job_json(job: TrainingJob) -> dict[str, Any]:
    return {
        "id": job.id,
        "model": job.model_kind,
        "dataset": job.dataset_key,
        "workers": job.workers,
        "status": job.status.value,
        "progress": job.progress,
        "error": job.error,
        "model_version_id": job.model_version_id,
        "created_at": job.created_at.isoformat(),
        "updated_at": job.updated_at.isoformat(),
    }


def add_training_routes(app: FastAPI, *, engine: Engine, store: ObjectStore) -> None:
    @app.post("/v1/training-jobs", status_code=202, tags=["training"])
    def start_training(body: TrainingRequest, request: Request, who: Scientist) -> dict[str, Any]:
        """Queue a training run on a dataset snapshot (the training service runs it)."""
        config = {} if body.steps is None else {"steps": body.steps}
        try:
            job = request_training(
                engine,
                store,
                model=body.model,
                dataset_key=body.dataset,
                workers=body.workers,
                config=config,
            )
        except JobError as exc:
            raise Invalid(str(exc)) from None
        detail = {"model": body.model, "dataset": body.dataset, "workers": body.workers}
        record_audit(engine, actor(request, who), "train", f"job:{job.id}", detail)
        return {**job_json(job), "requested_by": who.name}

    @app.get("/v1/training-jobs", tags=["training"])
    def training_jobs(_: Reader) -> list[dict[str, Any]]:
        """The last 100 training jobs, newest first."""
        with Session(engine) as session:
            rows = session.exec(
                select(TrainingJob).order_by(col(TrainingJob.created_at).desc()).limit(100)
            ).all()
        return [job_json(row) for row in rows]

    @app.get("/v1/training-jobs/{job_id}", tags=["training"])
    def training_job(job_id: JobId, _: Reader) -> dict[str, Any]:
        """Status and progress of one job."""
        try:
            return job_json(get_job(engine, job_id))
        except JobError as exc:
            raise NotFound(str(exc)) from None

    @app.get("/v1/models", tags=["training"])
    def model_versions(_: Reader) -> list[dict[str, Any]]:
        """Every registered model version with its status and metrics."""
        return [
            {
                "id": row.id,
                "name": row.name,
                "version": row.version,
                "kind": row.kind,
                "status": row.status.value,
                "metrics": row.metrics,
                "promoted_at": None if row.promoted_at is None else row.promoted_at.isoformat(),
            }
            for row in list_versions(engine)
        ]
