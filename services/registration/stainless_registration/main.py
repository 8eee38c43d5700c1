"""Composition root of the registration consumer."""

from __future__ import annotations

import signal
import threading

import structlog

from stainless.core.config import load_settings
from stainless.core.db.engine import create_db_engine, ping, wait_for_database
from stainless.core.events import ALL_TOPICS, create_bus
from stainless.core.logs import configure_logging
from stainless.core.observability import HealthServer, create_health_app
from stainless.core.tasks import create_celery
from stainless.stages.registration.consumers import registration_consumer
from stainless.stages.registration.tasks import register_field_task

log = structlog.get_logger(__name__)


def main() -> None:
    settings = load_settings()
    configure_logging(settings.log)
    engine = create_db_engine(settings.database)
    wait_for_database(engine)
    bus = create_bus(settings.bus, client_id="stainless-registration")
    bus.ensure_topics(ALL_TOPICS)
    task = register_field_task(create_celery(settings), settings)
    consumer = registration_consumer(
        bus, engine, lambda slide_id, index: task.delay(slide_id=slide_id, field_index=index)
    )

    health = HealthServer(
        create_health_app(lambda: ping(engine), title="stainless-registration"),
        port=settings.registration.http_port,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    health.start()
    log.info("registration consumer started", bus=settings.bus.backend.value)
    try:
        consumer.run(stop)
    finally:
        consumer.close()
        bus.close()
        health.stop()


if __name__ == "__main__":
    main()
