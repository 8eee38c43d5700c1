"""How every service process runs, whatever its stage.

A service's ``main()`` is one call: ``run_http`` for an HTTP app, ``run_consumer`` for a
loop beside a health server (an event consumer, the outbox relay). The runner reads the
settings, configures logging, calls the stage's ``build`` with them, handles SIGTERM and
SIGINT, serves the health endpoints and stops in order.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import structlog

from stainless.core.config import Settings, load_settings
from stainless.core.events.bus import HandlerInterrupted
from stainless.core.logs import configure_logging

if TYPE_CHECKING:
    from fastapi import FastAPI

    from stainless.core.observability import HealthServer

__all__ = ["Loop", "Service", "run_consumer", "run_http", "service_settings"]

log = structlog.get_logger(__name__)


class Loop(Protocol):
    """Work that runs until ``stop`` is set."""

    def run(self, stop: threading.Event) -> None: ...


@dataclass(frozen=True)
class Service:
    """A consumer process as a stage's ``build`` composes it."""

    name: str
    loop: Loop
    health: HealthServer
    close: Callable[[], None] = lambda: None
    details: Mapping[str, object] = field(default_factory=dict)  # logged when it starts


def service_settings() -> Settings:
    """The process's settings, with logging configured from them."""
    settings = load_settings()
    configure_logging(settings.log)
    return settings


def run_consumer(build: Callable[[Settings, threading.Event], Service]) -> None:
    """Build the service, serve its health endpoints and run its loop until a signal."""
    settings = service_settings()
    stop = threading.Event()
    service = build(settings, stop)
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


def run_http(build: Callable[[Settings], FastAPI], port: Callable[[Settings], int]) -> None:
    """Serve the app that ``build`` makes from the settings on ``port(settings)``."""
    import uvicorn

    settings = service_settings()
    uvicorn.run(
        build(settings),
        host="0.0.0.0",  # noqa: S104 - a container's service port
        port=port(settings),
        log_config=None,
        access_log=False,
    )
