"""The training service: runs each ``training.requested`` job on Ray (``stainless-trainer``).

Jobs are requested by ``POST /v1/training-jobs`` or ``stainless train``. A job that
is no longer queued (a redelivered event, or a job another replica took) is skipped;
a run that fails is recorded on the job row (status failed, the reason) and not
retried, so the event is not dead-lettered.
"""

from __future__ import annotations

import signal
import threading

import structlog

from stainless.config import Settings, load_settings
from stainless.db.engine import create_db_engine, ping, wait_for_database
from stainless.events import (
    ALL_TOPICS,
    Consumer,
    ConsumerGroup,
    Envelope,
    EventBus,
    Topic,
    TrainingRequested,
    create_bus,
)
from stainless.jobs import JobError
from stainless.logs import configure_logging
from stainless.observability import HealthServer, create_health_app
from stainless_training.distributed import storage_for
from stainless_training.jobs import run_job

log = structlog.get_logger(__name__)


class TrainingHandler:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def __call__(self, envelope: Envelope) -> None:
        request = envelope.parsed(TrainingRequested)
        try:
            version = run_job(
                self._settings,
                request.job_id,
                storage=storage_for(self._settings),
                use_gpu=self._settings.ray.use_gpu,
            )
        except JobError as exc:
            log.info("training job skipped", job_id=request.job_id, reason=str(exc))
        except Exception as exc:  # noqa: BLE001 - the job row records the failure
            log.error("training job failed", job_id=request.job_id, error=str(exc))
        else:
            log.info("training job done", job_id=request.job_id, model_version_id=version)


def training_consumer(bus: EventBus, settings: Settings) -> Consumer:
    return bus.consumer(
        group=ConsumerGroup.TRAINING,
        topics=[Topic.TRAINING_REQUESTED],
        handler=TrainingHandler(settings),
    )


def main() -> None:
    import ray

    settings = load_settings()
    configure_logging(settings.log)
    engine = create_db_engine(settings.database)
    wait_for_database(engine)
    bus = create_bus(settings.bus, client_id="stainless-trainer")
    bus.ensure_topics(ALL_TOPICS)
    ray.init(
        address=settings.ray.address,
        num_cpus=None if settings.ray.address else settings.ray.num_cpus,
        log_to_driver=False,
    )
    consumer = training_consumer(bus, settings)
    health = HealthServer(
        create_health_app(lambda: ping(engine) and ray.is_initialized(), title="stainless-trainer"),
        port=settings.ray.http_port,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    health.start()
    log.info("training service started", ray=settings.ray.address or "local")
    try:
        consumer.run(stop)
    finally:
        consumer.close()
        bus.close()
        health.stop()
        ray.shutdown()


if __name__ == "__main__":
    main()
