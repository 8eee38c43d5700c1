"""Exactly-once effects on top of at-least-once delivery: the processed-events table."""

from __future__ import annotations

from collections.abc import Callable

import structlog
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from stainless.core.db.engine import session_scope
from stainless.core.db.models import ProcessedEvent
from stainless.core.events.contracts import Envelope

log = structlog.get_logger(__name__)

SessionHandler = Callable[[Session, Envelope], None]
SessionBatchHandler = Callable[[Session, list[Envelope]], None]


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


class IdempotentBatchHandler:
    """As :class:`IdempotentHandler` for a batch: one transaction for its new events.

    Events this consumer already processed, and repeats within the batch, are left
    out; the handler gets the rest, and their markers commit with its writes. A
    batch that fails (a concurrent consumer took one of its events, say) raises, and
    the dispatcher then handles each event alone through ``single``.
    """

    def __init__(self, engine: Engine, consumer: str, handler: SessionBatchHandler) -> None:
        self._engine = engine
        self._consumer = consumer
        self._handler = handler
        self.single = IdempotentHandler(engine, consumer, lambda s, e: handler(s, [e]))

    def __call__(self, envelopes: list[Envelope]) -> None:
        with session_scope(self._engine) as session:
            fresh: dict[str, Envelope] = {}
            for envelope in envelopes:
                if envelope.event_id in fresh:
                    continue
                if session.get(ProcessedEvent, (self._consumer, envelope.event_id)) is not None:
                    log.info(
                        "duplicate event skipped",
                        consumer=self._consumer,
                        event_id=envelope.event_id,
                        topic=envelope.topic,
                    )
                    continue
                fresh[envelope.event_id] = envelope
            if not fresh:
                return
            self._handler(session, list(fresh.values()))
            session.add_all(
                ProcessedEvent(consumer=self._consumer, event_id=event_id) for event_id in fresh
            )
