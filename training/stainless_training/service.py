"""The training service: runs each ``training.requested`` job on Ray (``stainless-trainer``).

Jobs are requested by ``POST /v1/training-jobs`` or ``stainless-train ray``. Without
``STAINLESS_RAY__RAYJOB_TEMPLATE`` the service drives each job itself on the Ray cluster
at ``STAINLESS_RAY__ADDRESS`` (a local Ray when unset); with it, as in the Helm chart, it
submits each job as a KubeRay RayJob that runs it (:mod:`stainless_training.kuberay`).
A job that is no longer queued (a redelivered event, or a job another replica took) is
skipped; a run or submission that fails is recorded on the job row (status failed, the
reason) and not retried, so the event is not dead-lettered.
"""

from __future__ import annotations

import threading
from typing import Protocol

import structlog
from sqlalchemy import Engine

from stainless.core.db.engine import ping
from stainless.core.db.models import JobStatus
from stainless.core.events import (
    Consumer,
    ConsumerGroup,
    Envelope,
    EventBus,
    Topic,
    TrainingRequested,
)
from stainless.core.observability import HealthServer, create_health_app
from stainless.core.runners import Service, connect, run_consumer
from stainless.stages.retraining.jobs import JobError, finish_job, get_job
from stainless_training.distributed import connect_ray, storage_for
from stainless_training.jobs import run_job
from stainless_training.kuberay import RayJobError, RayJobSubmitter
from stainless_training.settings import TrainingSettings

log = structlog.get_logger(__name__)


class JobLauncher(Protocol):
    """Runs or submits a queued job; what it did, for the log (a version id, a RayJob)."""

    def __call__(self, job_id: str) -> str: ...

    def ready(self) -> bool: ...

    def close(self) -> None: ...


class RunOnRay:
    """Runs the job from this process on the Ray cluster ``ray.init`` connected to."""

    def __init__(self, settings: TrainingSettings) -> None:
        self._settings = settings

    @classmethod
    def connect(cls, settings: TrainingSettings) -> RunOnRay:
        """Connect this process to ``settings.ray.address`` (a local Ray when unset)."""
        connect_ray(settings)
        return cls(settings)

    def ready(self) -> bool:
        import ray

        return bool(ray.is_initialized())

    def close(self) -> None:
        import ray

        ray.shutdown()

    def __call__(self, job_id: str) -> str:
        return run_job(
            self._settings,
            job_id,
            storage=storage_for(self._settings),
            use_gpu=self._settings.ray.use_gpu,
        )


class SubmitRayJob:
    """Submits a queued job as a KubeRay RayJob, which runs it (``stainless-train-job``)."""

    def __init__(self, engine: Engine, submitter: RayJobSubmitter) -> None:
        self._engine = engine
        self._submitter = submitter

    def __call__(self, job_id: str) -> str:
        job = get_job(self._engine, job_id)
        if job.status is not JobStatus.QUEUED:
            raise JobError(f"training job {job_id} is {job.status.value}, not queued")
        try:
            return self._submitter.submit(job_id, workers=job.workers)
        except RayJobError as exc:
            finish_job(self._engine, job_id, error=str(exc))
            raise

    def ready(self) -> bool:
        return True

    def close(self) -> None:
        self._submitter.close()


class TrainingHandler:
    def __init__(self, launch: JobLauncher) -> None:
        self._launch = launch

    def __call__(self, envelope: Envelope) -> None:
        request = envelope.parsed(TrainingRequested)
        try:
            done = self._launch(request.job_id)
        except JobError as exc:
            log.info("training job skipped", job_id=request.job_id, reason=str(exc))
        except Exception as exc:  # noqa: BLE001 - the job row records the failure
            log.error("training job failed", job_id=request.job_id, error=str(exc))
        else:
            log.info("training job launched", job_id=request.job_id, result=done)


def training_consumer(bus: EventBus, launch: JobLauncher) -> Consumer:
    return bus.consumer(
        group=ConsumerGroup.TRAINING,
        topics=[Topic.TRAINING_REQUESTED],
        handler=TrainingHandler(launch),
    )


def build(settings: TrainingSettings, stop: threading.Event) -> Service:
    """The consumer of ``training.requested``, its launcher and its health server."""
    ports = connect(settings.database, settings.bus, client_id="stainless-trainer")
    template = settings.ray.rayjob_template
    launch: JobLauncher = (
        SubmitRayJob(ports.engine, RayJobSubmitter.in_cluster(template))
        if template is not None
        else RunOnRay.connect(settings)
    )
    consumer = training_consumer(ports.bus, launch)
    health = HealthServer(
        create_health_app(lambda: ping(ports.engine) and launch.ready(), title="stainless-trainer"),
        port=settings.ray.http_port,
    )

    def close() -> None:
        consumer.close()
        launch.close()
        ports.close()

    return Service(
        name="stainless-trainer",
        loop=consumer,
        health=health,
        close=close,
        details={"launcher": type(launch).__name__, "ray": settings.ray.address or "local"},
    )


def main() -> None:
    run_consumer(build, TrainingSettings)
