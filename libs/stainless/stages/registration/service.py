"""The registration consumer process: ``fields.ingested`` queues the field task."""

from __future__ import annotations

import threading

from stainless.core.config import Settings
from stainless.core.db.engine import create_db_engine, ping, wait_for_database
from stainless.core.events import ALL_TOPICS, create_bus
from stainless.core.observability import HealthServer, create_health_app
from stainless.core.runners import Service
from stainless.core.tasks import create_celery
from stainless.stages.registration.consumers import registration_consumer
from stainless.stages.registration.tasks import register_field_task

__all__ = ["build"]


def build(settings: Settings, stop: threading.Event) -> Service:
    """The consumer, its bus, the task it queues and its health server."""
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

    def close() -> None:
        consumer.close()
        bus.close()

    return Service(
        name="stainless-registration",
        loop=consumer,
        health=health,
        close=close,
        details={"bus": settings.bus.backend.value},
    )
