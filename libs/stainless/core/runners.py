"""How every service process runs, whatever its stage.

A service's ``main()`` is one call: ``run_http`` for an HTTP app, ``run_consumer`` for a
loop beside a health server (an event consumer, the outbox relay), ``run_worker`` for a
Celery worker. The runner reads the service's own settings class, configures logging,
calls the stage's ``build`` with them, handles SIGTERM and SIGINT, serves the health
endpoints and stops in order.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import structlog

from stainless.core.config import BusSettings, DatabaseSettings, P, load_settings
from stainless.core.db.engine import create_db_engine, wait_for_database
from stainless.core.events import ALL_TOPICS, EventBus, create_bus
from stainless.core.events.bus import HandlerInterrupted
from stainless.core.logs import configure_logging

if TYPE_CHECKING:
    from celery import Celery
    from fastapi import FastAPI
    from sqlalchemy import Engine

    from stainless.core.observability import HealthServer

__all__ = [
    "Connections",
    "Loop",
    "Service",
    "Worker",
    "connect",
    "run_consumer",
    "run_http",
    "run_worker",
    "worker_app",
]

log = structlog.get_logger(__name__)


class Loop(Protocol):
    """Work that runs until ``stop`` is set, or one round at a time (the embedded demo)."""

    def run(self, stop: threading.Event) -> None: ...

    def poll_once(self) -> int:
        """Handle what is waiting now; return how much that was (0 = idle)."""
        ...


@dataclass(frozen=True)
class Service:
    """A consumer process as a stage's ``build`` composes it."""

    name: str
    loop: Loop
    health: HealthServer
    close: Callable[[], None] = lambda: None
    details: Mapping[str, object] = field(default_factory=dict)  # logged when it starts


@dataclass(frozen=True)
class Connections:
    """A consumer's database engine and event bus."""

    engine: Engine
    bus: EventBus
    close: Callable[[], None]  # closes the bus if it was opened here, not one passed in


def connect(
    database: DatabaseSettings,
    bus_settings: BusSettings,
    *,
    client_id: str,
    engine: Engine | None = None,
    bus: EventBus | None = None,
) -> Connections:
    """The engine (once the database answers) and the bus (with every topic) a consumer
    uses: opened from the settings, or those of a process that runs several stages (the
    embedded demo) when it passes its own."""
    if engine is None:
        engine = create_db_engine(database)
        wait_for_database(engine)
    if bus is not None:
        return Connections(engine, bus, close=lambda: None)
    opened = create_bus(bus_settings, client_id=client_id)
    opened.ensure_topics(ALL_TOPICS)
    return Connections(engine, opened, close=opened.close)


def _settings(cls: type[P]) -> P:
    settings = load_settings(cls)
    configure_logging(settings.log)
    return settings


def run_consumer(build: Callable[[P, threading.Event], Service], settings: type[P]) -> None:
    """Build the service, serve its health endpoints and run its loop until a signal."""
    stop = threading.Event()
    service = build(_settings(settings), stop)
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    service.health.start()
    log.info("service started", service=service.name, **service.details)
    try:
        service.loop.run(stop)
    except HandlerInterrupted:
        log.info("stopped in the middle of an event; it will be delivered again")
    finally:
        service.close()
        service.health.stop()


def run_http(
    build: Callable[[P], FastAPI],
    settings: type[P],
    port: Callable[[P], int],
    metrics_port: Callable[[P], int],
) -> None:
    """Serve the app that ``build`` makes on ``port(settings)``, and its Prometheus metrics
    on ``metrics_port(settings)``: scrapers never need the clients' port, nor clients the
    metrics."""
    import uvicorn

    from stainless.core.observability import HealthServer, create_metrics_app

    loaded = _settings(settings)
    app = build(loaded)
    metrics = HealthServer(create_metrics_app(title=app.title), port=metrics_port(loaded))
    metrics.start()
    try:
        uvicorn.run(
            app,
            host="0.0.0.0",  # noqa: S104 - a container's service port
            port=port(loaded),
            log_config=None,
            access_log=False,
        )
    finally:
        metrics.stop()


@dataclass(frozen=True)
class Worker:
    """A Celery worker as a stage's ``build`` composes it: the app with its tasks registered."""

    name: str
    app: Celery
    ready: Callable[[], bool]  # what /health/ready answers
    port: int  # of the health and metrics server
    concurrency: int
    log_level: str


def worker_app(build: Callable[[P], Worker], settings: type[P]) -> Worker:
    """Build the worker and tie its health server to the worker's start and stop.

    Called at import of the service's module, whose ``app`` ``celery -A`` finds.
    """
    from celery.signals import worker_ready, worker_shutdown

    from stainless.core.observability import HealthServer, create_health_app

    worker = build(_settings(settings))
    servers: list[HealthServer] = []

    def start(**_: object) -> None:
        server = HealthServer(create_health_app(worker.ready, title=worker.name), port=worker.port)
        server.start()
        servers.append(server)

    def stop(**_: object) -> None:
        for server in servers:
            server.stop()

    worker_ready.connect(start, weak=False)
    worker_shutdown.connect(stop, weak=False)
    return worker


def run_worker(worker: Worker) -> None:
    """Run the worker until a signal (Celery handles SIGTERM: it finishes the task at hand)."""
    worker.app.worker_main(
        [
            "worker",
            "--loglevel",
            worker.log_level,
            "--concurrency",
            str(worker.concurrency),
            "--without-gossip",
            "--without-mingle",
        ]
    )
