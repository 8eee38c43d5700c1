"""Outbox relay: moves committed outbox rows onto the event bus, in order.

Run several replicas for availability: on Postgres each claims its batch with
``FOR UPDATE SKIP LOCKED``.
"""

from __future__ import annotations

import signal
import threading

import structlog

from stainless.core.config import Settings, load_settings
from stainless.core.db.engine import create_db_engine, ping, wait_for_database
from stainless.core.events import ALL_TOPICS, create_bus
from stainless.core.events.outbox import OutboxRelay
from stainless.core.logs import configure_logging
from stainless.core.observability import HealthServer, create_health_app

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


def build(settings: Settings) -> tuple[RelayLoop, HealthServer]:
    """Composition root: every dependency is built here and passed by constructor."""
    engine = create_db_engine(settings.database)
    wait_for_database(engine)
    bus = create_bus(settings.bus, client_id="stainless-relay")
    bus.ensure_topics(ALL_TOPICS)
    relay = OutboxRelay(engine, bus, batch_size=settings.relay.batch_size)
    health = HealthServer(
        create_health_app(lambda: ping(engine), title="stainless-relay"),
        port=settings.relay.http_port,
    )
    return RelayLoop(relay, poll_interval_s=settings.relay.poll_interval_s), health


def main() -> None:
    settings = load_settings()
    configure_logging(settings.log)
    loop, health = build(settings)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    health.start()
    log.info("relay started", bus=settings.bus.backend.value)
    loop.run(stop)
    health.stop()


if __name__ == "__main__":
    main()
