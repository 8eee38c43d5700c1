"""Event handlers of the pipeline services. ``fields.ingested``: queue a field for cropping.

The work itself runs as a Celery task (on a worker, or in process when eager)
through :class:`~stainless.stages.registration.fields.FieldProcessor`; the task is safe to
queue twice, and the processed-events table keeps redeliveries from queueing it
again.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog
from sqlalchemy import Engine
from sqlmodel import Session

from stainless.core.events import Consumer, ConsumerGroup, Envelope, EventBus, FieldIngested, Topic
from stainless.core.events.idempotency import IdempotentHandler

log = structlog.get_logger(__name__)

Enqueue = Callable[[str, int], None]


class FieldsIngestedHandler:
    def __init__(self, enqueue: Enqueue) -> None:
        self._enqueue = enqueue

    def __call__(self, session: Session, envelope: Envelope) -> None:
        field = envelope.parsed(FieldIngested)
        self._enqueue(field.slide_id, field.field_index)
        log.info(
            "field queued",
            slide_id=field.slide_id,
            field_index=field.field_index,
            modality=field.modality,
        )


def registration_consumer(bus: EventBus, engine: Engine, enqueue: Enqueue) -> Consumer:
    group = ConsumerGroup.REGISTRATION
    handler = IdempotentHandler(engine, group, FieldsIngestedHandler(enqueue))
    return bus.consumer(group=group, topics=[Topic.FIELDS_INGESTED], handler=handler)
