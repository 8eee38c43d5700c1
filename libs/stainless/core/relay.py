"""The outbox relay process: moves committed outbox rows onto the event bus, in order.

Run several replicas for availability: on Postgres each claims its batch with
``FOR UPDATE SKIP LOCKED``.
"""

from __future__ import annotations

import threading

import structlog

from stainless.core.config import Settings
from stainless.core.db.engine import create_db_engine, ping, wait_for_database
from stainless.core.events import ALL_TOPICS, create_bus
from stainless.core.events.outbox import OutboxRelay
from stainless.core.observability import HealthServer, create_health_app
from stainless.core.runners import Service

__all__ = ["RelayLoop", "build"]

log = structlog.get_logger(__name__)


class RelayLoop:
    def __init__(self, relay: OutboxRelay, *, poll_interval_s: float) -> None:
        self._relay = relay
        self._poll_interval_s = poll_interval_s

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                published = self._relay.publish_pending()
            except Exception:
                log.exception("relay round failed; retrying")
                published = 0
                stop.wait(self._poll_interval_s * 4)
            if published == 0:
                stop.wait(self._poll_interval_s)
            else:
                log.info("published outbox events", count=published)


def build(settings: Settings, stop: threading.Event) -> Service:
    """The relay process: every dependency is built here and passed by constructor."""
    engine = create_db_engine(settings.database)
    wait_for_database(engine)
    bus = create_bus(settings.bus, client_id="stainless-relay")
    bus.ensure_topics(ALL_TOPICS)
    relay = OutboxRelay(engine, bus, batch_size=settings.relay.batch_size)
    health = HealthServer(
        create_health_app(lambda: ping(engine), title="stainless-relay"),
        port=settings.relay.http_port,
    )
    return Service(
        name="stainless-relay",
        loop=RelayLoop(relay, poll_interval_s=settings.relay.poll_interval_s),
        health=health,
        close=bus.close,
        details={"bus": settings.bus.backend.value},
    )
