"""The registration stage's Celery task: register, detect and crop one field."""

from __future__ import annotations

from dataclasses import asdict
from functools import cache
from typing import Any

from celery import Celery, Task

from stainless.core.config import (
    DatabaseSettings,
    IngestionSettings,
    RegistrationSettings,
    StoreSettings,
)
from stainless.core.db.engine import create_db_engine
from stainless.core.inference.port import InferenceUnavailable
from stainless.core.storage import create_store
from stainless.stages.registration.fields import FieldProcessor, build_field_processor

__all__ = ["PROCESS_FIELD_TASK", "register_field_task"]

PROCESS_FIELD_TASK = "stainless.registration.process_field"


def register_field_task(
    app: Celery,
    *,
    database: DatabaseSettings,
    store: StoreSettings,
    settings: RegistrationSettings,
    uploads: IngestionSettings,
) -> Task:
    """Register the field task on ``app``; its processor is built once, on first use
    (``uploads``: the decoding limits of fields stored as received)."""

    @cache
    def field_processor() -> FieldProcessor:
        engine = create_db_engine(database)
        return build_field_processor(
            settings, engine=engine, store=create_store(store), uploads=uploads
        )

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

    task: Task = process_field
    return task
