from __future__ import annotations

import pytest
from sqlmodel import Session, select

from stainless.core.config import DatabaseSettings
from stainless.core.db.engine import create_db_engine, session_scope
from stainless.core.db.models import ProcessedEvent, Scanner
from stainless.core.events import Envelope, InMemoryBus, RetryPolicy, decode_envelope
from stainless.core.events.idempotency import IdempotentHandler
from stainless.core.events.outbox import OutboxRelay, add_event

from ....support.events import field_event


@pytest.fixture
def engine(sqlite_url: str):  # type: ignore[no-untyped-def]
    return create_db_engine(DatabaseSettings(url=sqlite_url))


def test_rolled_back_transaction_leaves_no_event(engine) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(RuntimeError), session_scope(engine) as session:
        add_event(session, field_event())
        raise RuntimeError("crash before commit")
    bus = InMemoryBus()
    assert OutboxRelay(engine, bus).drain() == 0
    assert bus.messages("fields.ingested") == []


def test_relay_publishes_in_order_once(engine) -> None:  # type: ignore[no-untyped-def]
    with session_scope(engine) as session:
        for i in range(5):
            add_event(session, field_event(index=i))
    bus = InMemoryBus()
    relay = OutboxRelay(engine, bus, batch_size=2)
    assert relay.pending() == 5
    assert relay.drain() == 5
    assert relay.drain() == 0
    indexes = [
        decode_envelope(raw).payload["field_index"] for _, raw in bus.messages("fields.ingested")
    ]
    assert indexes == [0, 1, 2, 3, 4]


class _DownBus(InMemoryBus):
    def publish_raw(self, topic: str, key: str, value: bytes) -> None:
        raise ConnectionError("broker down")


def test_events_stay_pending_while_the_bus_is_down(engine) -> None:  # type: ignore[no-untyped-def]
    with session_scope(engine) as session:
        add_event(session, field_event())
    with pytest.raises(ConnectionError):
        OutboxRelay(engine, _DownBus()).publish_pending()
    bus = InMemoryBus()
    assert OutboxRelay(engine, bus).drain() == 1
    assert len(bus.messages("fields.ingested")) == 1


def test_redelivered_event_changes_nothing(engine) -> None:  # type: ignore[no-untyped-def]
    calls: list[str] = []

    def handler(session: Session, envelope: Envelope) -> None:
        calls.append(envelope.event_id)
        session.add(Scanner(name=f"scanner-{envelope.event_id}", key_prefix="p", key_hash="h"))

    event = field_event()
    bus = InMemoryBus(policy=RetryPolicy(max_attempts=1, backoff_s=0))
    bus.publish(event)
    bus.publish(event)
    consumer = bus.consumer(
        group="g", topics=["fields.ingested"], handler=IdempotentHandler(engine, "g", handler)
    )
    assert consumer.poll_once() == 2
    assert calls == [event.event_id]
    assert bus.messages("fields.ingested.dlq") == []
    with Session(engine) as session:
        assert len(session.exec(select(Scanner)).all()) == 1
        assert len(session.exec(select(ProcessedEvent)).all()) == 1


def test_failed_handler_records_nothing(engine) -> None:  # type: ignore[no-untyped-def]
    def handler(session: Session, envelope: Envelope) -> None:
        session.add(Scanner(name="half", key_prefix="p", key_hash="h"))
        raise RuntimeError("after a write")

    with pytest.raises(RuntimeError):
        IdempotentHandler(engine, "g", handler)(field_event())
    with Session(engine) as session:
        assert session.exec(select(Scanner)).all() == []
        assert session.exec(select(ProcessedEvent)).all() == []
