"""The Celery application and the tasks registered on it."""

from __future__ import annotations

from dataclasses import asdict
from functools import cache
from typing import TYPE_CHECKING, Any

from celery import Celery

from stainless.core.config import Settings
from stainless.core.inference.port import InferenceUnavailable
from stainless.core.storage import ObjectStore, create_store

if TYPE_CHECKING:
    from stainless.stages.registration.fields import FieldProcessor

PHANTOM_TASK = "stainless.phantom.generate_slide"
PROCESS_FIELD_TASK = "stainless.registration.process_field"


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

    @cache
    def field_processor() -> FieldProcessor:
        from stainless.core.db.engine import create_db_engine
        from stainless.stages.registration.fields import build_field_processor

        engine = create_db_engine(settings.database)
        return build_field_processor(settings.registration, engine=engine, store=store())

    @app.task(  # type: ignore[untyped-decorator]
        name=PROCESS_FIELD_TASK,
        shared=False,
        autoretry_for=(InferenceUnavailable,),
        max_retries=None,
        retry_backoff=2,
        retry_backoff_max=60,
        retry_jitter=True,
    )
    def process_field(slide_id: str, field_index: int) -> dict[str, Any]:
        """Register, detect and crop one field once both of its images are stored.

        A learned detector served by an inference server that cannot answer now is
        retried, with a growing wait, until it answers: the field is not lost.
        """
        return asdict(field_processor().process(slide_id, field_index))

    return app
