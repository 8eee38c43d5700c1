"""The outbox relay process: moves committed outbox rows onto the event bus, in order.

Run several replicas for availability: on Postgres each claims its batch with
``FOR UPDATE SKIP LOCKED``.
"""

from __future__ import annotations

import threading

import structlog
from sqlalchemy import Engine

from stainless.core.config import BusSettings, DatabaseSettings, ProcessSettings, RelaySettings
from stainless.core.db.engine import ping
from stainless.core.events import EventBus
from stainless.core.events.outbox import OutboxRelay
from stainless.core.observability import HealthServer, create_health_app
from stainless.core.runners import Service, connect

__all__ = ["RelayLoop", "RelayServiceSettings", "build"]

log = structlog.get_logger(__name__)


class RelayLoop:
    def __init__(self, relay: OutboxRelay, *, poll_interval_s: float) -> None:
        self._relay = relay
        self._poll_interval_s = poll_interval_s

    def poll_once(self) -> int:
        return self._relay.drain()

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


class RelayServiceSettings(ProcessSettings):
    """What the relay reads."""

    database: DatabaseSettings = DatabaseSettings()
    bus: BusSettings = BusSettings()
    relay: RelaySettings = RelaySettings()


def build(
    settings: RelayServiceSettings,
    stop: threading.Event,
    *,
    engine: Engine | None = None,
    bus: EventBus | None = None,
) -> Service:
    """The relay process: every dependency is built here (or passed by a process that runs
    several stages, the embedded demo) and handed on by constructor."""
    ports = connect(
        settings.database, settings.bus, client_id="stainless-relay", engine=engine, bus=bus
    )
    relay = OutboxRelay(ports.engine, ports.bus, batch_size=settings.relay.batch_size)
    health = HealthServer(
        create_health_app(lambda: ping(ports.engine), title="stainless-relay"),
        port=settings.relay.http_port,
    )
    return Service(
        name="stainless-relay",
        loop=RelayLoop(relay, poll_interval_s=settings.relay.poll_interval_s),
        health=health,
        close=ports.close,
        details={"bus": settings.bus.backend.value},
    )
