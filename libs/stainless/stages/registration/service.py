"""The registration stage's processes: the consumer (``fields.ingested`` queues the field
task) and the Celery worker that runs the field task (and renders phantom slides)."""

from __future__ import annotations

import threading

from sqlalchemy import Engine

from stainless.core.config import (
    BusSettings,
    DatabaseSettings,
    IngestionSettings,
    ProcessSettings,
    RegistrationSettings,
    StoreSettings,
    TaskSettings,
    WorkerSettings,
)
from stainless.core.db.engine import ping
from stainless.core.events import EventBus
from stainless.core.observability import HealthServer, create_health_app
from stainless.core.runners import Service, Worker, connect
from stainless.core.tasks import create_celery
from stainless.datasets.phantom import register_phantom_task
from stainless.stages.registration.consumers import registration_consumer
from stainless.stages.registration.detectors import DetectorUnavailable, check_detectors
from stainless.stages.registration.tasks import register_field_task

__all__ = ["RegistrationServiceSettings", "WorkerServiceSettings", "build", "build_worker"]


class RegistrationServiceSettings(ProcessSettings):
    """What the registration consumer reads (the field task's blocks: it may run eagerly)."""

    database: DatabaseSettings = DatabaseSettings()
    store: StoreSettings = StoreSettings()
    bus: BusSettings = BusSettings()
    tasks: TaskSettings = TaskSettings()
    registration: RegistrationSettings = RegistrationSettings()
    ingestion: IngestionSettings = IngestionSettings()  # decoding limits of raw uploads


class WorkerServiceSettings(ProcessSettings):
    """What the Celery worker reads."""

    database: DatabaseSettings = DatabaseSettings()
    store: StoreSettings = StoreSettings()
    tasks: TaskSettings = TaskSettings()
    registration: RegistrationSettings = RegistrationSettings()
    ingestion: IngestionSettings = IngestionSettings()  # decoding limits of raw uploads
    worker: WorkerSettings = WorkerSettings()


def build(
    settings: RegistrationServiceSettings,
    stop: threading.Event,
    *,
    engine: Engine | None = None,
    bus: EventBus | None = None,
    wait_for_fields: bool = False,
) -> Service:
    """The consumer, the task it queues and its health server; a process that runs several
    stages (the embedded demo) passes its one engine and bus and waits for each field task,
    so that a round of its loop ends with the field's events written."""
    ports = connect(
        settings.database, settings.bus, client_id="stainless-registration", engine=engine, bus=bus
    )
    task = register_field_task(
        create_celery(settings.tasks),
        database=settings.database,
        store=settings.store,
        settings=settings.registration,
        uploads=settings.ingestion,
    )

    def queue(slide_id: str, index: int) -> None:
        queued = task.delay(slide_id=slide_id, field_index=index)
        if wait_for_fields:
            queued.get(timeout=settings.tasks.task_time_limit_s)

    consumer = registration_consumer(ports.bus, ports.engine, queue)
    health = HealthServer(
        create_health_app(lambda: ping(ports.engine), title="stainless-registration"),
        port=settings.registration.http_port,
    )

    def close() -> None:
        consumer.close()
        ports.close()

    return Service(
        name="stainless-registration",
        loop=consumer,
        health=health,
        close=close,
        details={"bus": settings.bus.backend.value},
    )


def build_worker(settings: WorkerServiceSettings) -> Worker:
    """The Celery app with the field task and the phantom task; ready = the broker answers.

    Raises:
        SystemExit: a learned detector is selected but not exported.
    """
    try:
        check_detectors(settings.registration)
    except DetectorUnavailable as exc:
        raise SystemExit(f"stainless-worker cannot start: {exc}") from None
    app = create_celery(settings.tasks)
    register_phantom_task(app, settings.store)
    register_field_task(
        app,
        database=settings.database,
        store=settings.store,
        settings=settings.registration,
        uploads=settings.ingestion,
    )

    def broker_ready() -> bool:
        with app.connection_for_read() as connection:
            connection.ensure_connection(max_retries=1)
        return True

    return Worker(
        name="stainless-worker",
        app=app,
        ready=broker_ready,
        port=settings.worker.metrics_port,
        concurrency=settings.worker.concurrency,
        log_level=settings.log.level,
    )
