"""Celery worker on Redis. ``celery -A stainless_worker.main worker`` or ``stainless-worker``.

``stainless.stages.registration.service.build_worker`` composes it; its health server
(live/ready/metrics) starts with the worker, and ready means the broker answers.
"""

from __future__ import annotations

from celery import Celery

from stainless.core.runners import run_worker, worker_app
from stainless.stages.registration.service import WorkerServiceSettings, build_worker

worker = worker_app(build_worker, WorkerServiceSettings)
app: Celery = worker.app


def main() -> None:
    run_worker(worker)


if __name__ == "__main__":
    main()
