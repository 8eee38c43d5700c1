"""The Celery application. Each stage registers its own tasks on it
(``stainless.stages.registration.tasks``, ``stainless.datasets.phantom``)."""

from __future__ import annotations

from celery import Celery

from stainless.core.config import TaskSettings


def create_celery(settings: TaskSettings) -> Celery:
    """A Celery app for ``settings``: eager in process, or on the configured Redis.

    Tasks take and return JSON only (what crosses Redis); images move through the
    object store, whose adapter each worker process builds once from the settings. The
    app has no task until a stage registers one.
    """
    app = Celery(
        "stainless",
        broker=settings.broker_url,
        backend=settings.result_backend,
        set_as_current=False,
    )
    app.conf.update(
        task_always_eager=settings.eager,
        task_eager_propagates=True,
        task_store_eager_result=False,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_time_limit=settings.task_time_limit_s,
        broker_connection_retry_on_startup=True,
        result_expires=24 * 3600,
    )

    return app
