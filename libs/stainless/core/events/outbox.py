"""Transactional outbox: a row and the event announcing it commit together.

Writers call :func:`add_event` inside the transaction that writes their rows.
The :class:`OutboxRelay` publishes unpublished events in order and marks them;
several relays may run at once — on Postgres each locks its batch with
``FOR UPDATE SKIP LOCKED``. An event may be published twice if a relay dies
between publishing and marking; consumers are idempotent for that reason.
"""

from __future__ import annotations

from prometheus_client import Counter
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from stainless.core.db.engine import session_scope
from stainless.core.db.models import OutboxEvent, utcnow
from stainless.core.events.bus import EventBus
from stainless.core.events.contracts import Envelope

RELAYED = Counter("stainless_outbox_published_total", "Outbox events published")


def add_event(session: Session, envelope: Envelope) -> None:
    """Queue ``envelope`` for publication as part of the session's transaction."""
    session.add(
        OutboxEvent(
            event_id=envelope.event_id,
            topic=envelope.topic,
            key=envelope.key,
            payload=envelope.model_dump_json(),
        )
    )


class OutboxRelay:
    def __init__(self, engine: Engine, bus: EventBus, *, batch_size: int = 100) -> None:
        self._engine = engine
        self._bus = bus
        self._batch_size = batch_size

    def publish_pending(self) -> int:
        """Publish one batch of pending events; return how many were published."""
        with session_scope(self._engine) as session:
            rows = session.exec(
                select(OutboxEvent)
                .where(col(OutboxEvent.published_at).is_(None))
                .order_by(col(OutboxEvent.id))
                .limit(self._batch_size)
                .with_for_update(skip_locked=True)
            ).all()
            for row in rows:
                self._bus.publish_raw(row.topic, row.key, row.payload.encode())
                row.published_at = utcnow()
                session.add(row)
        RELAYED.inc(len(rows))
        return len(rows)

    def drain(self) -> int:
        """Publish until nothing is pending; return the total."""
        total = 0
        while published := self.publish_pending():
            total += published
        return total

    def pending(self) -> int:
        with Session(self._engine) as session:
            rows = session.exec(
                select(OutboxEvent.id).where(col(OutboxEvent.published_at).is_(None))
            ).all()
            return len(rows)
