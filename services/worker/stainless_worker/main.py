"""Celery worker on Redis. ``celery -A stainless_worker.main worker`` or ``stainless-worker``.

The worker's health server (live/ready/metrics) starts with the worker; ready
means the broker answers.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import worker_ready, worker_shutdown

from stainless.core.config import load_settings
from stainless.core.logs import configure_logging
from stainless.core.observability import HealthServer, create_health_app
from stainless.core.tasks import create_celery
from stainless.datasets.phantom import register_phantom_task
from stainless.stages.registration.detectors import DetectorUnavailable, check_detectors
from stainless.stages.registration.tasks import register_field_task

settings = load_settings()
configure_logging(settings.log)
try:  # the field task's detectors: a selected learned one must be exported
    check_detectors(settings.registration)
except DetectorUnavailable as exc:
    raise SystemExit(f"stainless-worker cannot start: {exc}") from None
app: Celery = create_celery(settings)
register_phantom_task(app, settings)
register_field_task(app, settings)
_health: list[HealthServer] = []


def _broker_ready() -> bool:
    with app.connection_for_read() as connection:
        connection.ensure_connection(max_retries=1)
    return True


@worker_ready.connect  # type: ignore[untyped-decorator]
def _start_health(**_: Any) -> None:
    server = HealthServer(
        create_health_app(_broker_ready, title="stainless-worker"),
        port=settings.worker.metrics_port,
    )
    server.start()
    _health.append(server)


@worker_shutdown.connect  # type: ignore[untyped-decorator]
def _stop_health(**_: Any) -> None:
    for server in _health:
        server.stop()


def main() -> None:
    app.worker_main(
        [
            "worker",
            "--loglevel",
            settings.log.level,
            "--concurrency",
            str(settings.worker.concurrency),
            "--without-gossip",
            "--without-mingle",
        ]
    )


if __name__ == "__main__":
    main()
