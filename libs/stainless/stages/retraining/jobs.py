"""Training jobs: requested (row + ``training.requested``), progress, outcome.

The request is checked before anything is written: a known model kind, workers ≥ 1
and a dataset snapshot that exists, is not empty and matches its hash. The row and
its event commit together; the job's runner (``stainless-train ray`` in process, or the
training service on ``training.requested``) moves it through running to succeeded or
failed and records progress (step, losses, samples/s, ETA) for the API and the CLI.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session

from stainless.core.db.engine import session_scope
from stainless.core.db.models import JobStatus, TrainingJob
from stainless.core.events.contracts import Envelope, TrainingRequested
from stainless.core.events.outbox import add_event
from stainless.core.storage import ObjectStore
from stainless.datasets.manifest import DatasetError, DatasetManifest, read_manifest


class ModelKind(StrEnum):
    """The three translators (DESIGN.md, thesis ch. 5, 6 and 8)."""

    MTMD = "mtmd"
    DISENTANGLED = "disentangled"
    PAIRED = "paired"


class JobError(ValueError):
    """A training request that cannot be accepted, or a job that cannot move on."""


def model_kind(model: str) -> ModelKind:
    """``model`` as a :class:`ModelKind`; :class:`JobError` naming the choices otherwise."""
    try:
        return ModelKind(model)
    except ValueError:
        known = ", ".join(k.value for k in ModelKind)
        raise JobError(f"unknown model {model!r}: choose one of {known}") from None


NEEDS = {
    ModelKind.MTMD: "DIC crops with their registered brightfield pairs",
    ModelKind.DISENTANGLED: "DIC crops and brightfield (stained) crops, paired or not",
    ModelKind.PAIRED: "DIC crops with their registered brightfield pairs and class labels",
}
"""What each model kind trains on (the table in docs/reference/retraining.md says the same)."""


def check_trainable(kind: ModelKind, manifest: DatasetManifest) -> None:
    """Refuse a snapshot that lacks what ``kind`` trains on, before anything runs.

    Raises:
        JobError: naming what is missing and what the snapshot holds.
    """
    pairs = [item for item in manifest.items if item.bf is not None]
    labelled = [item for item in pairs if item.label is not None]
    enough = {
        ModelKind.MTMD: bool(pairs),
        ModelKind.DISENTANGLED: bool(pairs),
        ModelKind.PAIRED: bool(labelled),
    }[kind]
    if not enough:
        raise JobError(
            f"model {kind.value} trains on {NEEDS[kind]}; this snapshot has "
            f"{len(manifest.items)} cells, {len(pairs)} with a brightfield crop, "
            f"{len(labelled)} of them labelled (a folder import holds DIC crops only: "
            "import paired crops or snapshot reviewed slides)"
        )


def request_training(
    engine: Engine,
    store: ObjectStore,
    *,
    model: str,
    dataset_key: str,
    workers: int = 1,
    config: dict[str, Any] | None = None,
) -> TrainingJob:
    """Accept a training request: a queued job row and ``training.requested``, together.

    ``config`` holds training settings beyond the model and the data (steps, size, …);
    the runner validates them against its typed training configuration.

    Raises:
        JobError: unknown model, workers < 1, a missing, empty or altered snapshot, or one
            without what the model trains on (:data:`NEEDS`); nothing is written then.
    """
    kind = model_kind(model)
    if workers < 1:
        raise JobError(f"workers must be at least 1, got {workers}")
    try:
        manifest = read_manifest(store, dataset_key)
    except DatasetError as exc:
        raise JobError(f"dataset {dataset_key!r}: {exc}") from None
    check_trainable(kind, manifest)
    with session_scope(engine) as session:
        job = TrainingJob(
            model_kind=kind.value, dataset_key=dataset_key, workers=workers, config=config
        )
        session.add(job)
        session.flush()
        payload = TrainingRequested(
            job_id=job.id, model_kind=kind.value, dataset_key=dataset_key, workers=workers
        )
        add_event(session, Envelope.wrap(payload, key=job.id))
        session.flush()
        session.expunge(job)
    return job


def _job(session: Session, job_id: str) -> TrainingJob:
    job = session.get(TrainingJob, job_id, with_for_update=True)
    if job is None:
        raise JobError(f"no training job {job_id}")
    return job


def start_job(engine: Engine, job_id: str, *, ray_job_id: str | None = None) -> TrainingJob:
    """Queued → running (a job already running or finished is refused)."""
    with session_scope(engine) as session:
        job = _job(session, job_id)
        if job.status is not JobStatus.QUEUED:
            raise JobError(f"training job {job_id} is {job.status.value}, not queued")
        job.status = JobStatus.RUNNING
        job.ray_job_id = ray_job_id
        job.updated_at = datetime.now(UTC)
        session.add(job)
        session.flush()
        session.expunge(job)
    return job


def record_progress(engine: Engine, job_id: str, progress: dict[str, Any]) -> None:
    with session_scope(engine) as session:
        job = _job(session, job_id)
        job.progress = {**job.progress, **progress}
        job.updated_at = datetime.now(UTC)
        session.add(job)


def finish_job(
    engine: Engine,
    job_id: str,
    *,
    error: str | None = None,
    model_version_id: str | None = None,
    progress: dict[str, Any] | None = None,
) -> None:
    """Running → succeeded (with the model version it registered), or → failed with ``error``."""
    with session_scope(engine) as session:
        job = _job(session, job_id)
        job.status = JobStatus.FAILED if error else JobStatus.SUCCEEDED
        job.error = error
        job.model_version_id = model_version_id
        if progress:
            job.progress = {**job.progress, **progress}
        job.updated_at = datetime.now(UTC)
        session.add(job)


def get_job(engine: Engine, job_id: str) -> TrainingJob:
    with Session(engine) as session:
        job = session.get(TrainingJob, job_id)
        if job is None:
            raise JobError(f"no training job {job_id}")
        return job
