"""Exactly-once effects on top of at-least-once delivery: the processed-events table."""

from __future__ import annotations

from collections.abc import Callable

import structlog
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from stainless.db.engine import session_scope
from stainless.db.models import ProcessedEvent
from stainless.events.contracts import Envelope

log = structlog.get_logger(__name__)

SessionHandler = Callable[[Session, Envelope], None]


class IdempotentHandler:
    """Runs ``handler`` once per event id and consumer, in one transaction with its marker.

    The handler's writes and the processed-events row commit together, so a
    redelivered event (a consumer that died before committing its offset, a
    relay that published twice) finds the marker and changes nothing.
    """

    def __init__(self, engine: Engine, consumer: str, handler: SessionHandler) -> None:
        self._engine = engine
        self._consumer = consumer
        self._handler = handler

    def __call__(self, envelope: Envelope) -> None:
        try:
            with session_scope(self._engine) as session:
                if session.get(ProcessedEvent, (self._consumer, envelope.event_id)) is not None:
                    log.info(
                        "duplicate event skipped",
                        consumer=self._consumer,
                        event_id=envelope.event_id,
                        topic=envelope.topic,
                    )
                    return
                self._handler(session, envelope)
                session.add(ProcessedEvent(consumer=self._consumer, event_id=envelope.event_id))
        except IntegrityError:
            if not self._already_processed(envelope.event_id):
                raise
            log.info(
                "event processed concurrently", consumer=self._consumer, event_id=envelope.event_id
            )

    def _already_processed(self, event_id: str) -> bool:
        with Session(self._engine) as session:
            return session.get(ProcessedEvent, (self._consumer, event_id)) is not None
