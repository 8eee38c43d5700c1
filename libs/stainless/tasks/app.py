"""The Celery application and the tasks registered on it."""

from __future__ import annotations

from functools import cache
from typing import Any

from celery import Celery

from stainless.config import Settings
from stainless.storage import ObjectStore, create_store

PHANTOM_TASK = "stainless.phantom.generate_slide"


def create_celery(settings: Settings) -> Celery:
    """A Celery app for ``settings``: eager in process, or on the configured Redis.

    Tasks take and return JSON only (what crosses Redis); images move through the
    object store, whose adapter each worker process builds once from the settings.
    """
    app = Celery(
        "stainless",
        broker=settings.tasks.broker_url,
        backend=settings.tasks.result_backend,
        set_as_current=False,
    )
    app.conf.update(
        task_always_eager=settings.tasks.eager,
        task_eager_propagates=True,
        task_store_eager_result=False,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_time_limit=settings.tasks.task_time_limit_s,
        broker_connection_retry_on_startup=True,
        result_expires=24 * 3600,
    )

    @cache
    def store() -> ObjectStore:
        return create_store(settings.store)

    @app.task(name=PHANTOM_TASK, shared=False)  # type: ignore[untyped-decorator]
    def generate_phantom_slide(
        prefix: str,
        slide_index: int,
        fields: int,
        seed: int,
        width: int | None = None,
        height: int | None = None,
    ) -> dict[str, Any]:
        """Render one phantom slide into the object store; return its manifest entry."""
        from stainless.imaging.phantom_set import phantom_config, write_slide

        return write_slide(
            store(),
            prefix=prefix,
            slide_index=slide_index,
            fields=fields,
            seed=seed,
            config=phantom_config(width=width, height=height),
        )

    return app
