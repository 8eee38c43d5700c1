from __future__ import annotations

import pytest

from stainless.core.events import Envelope, FieldIngested, InMemoryBus, RetryPolicy, decode_envelope
from stainless.core.events.bus import Batching

from ....support.events import field_event


@pytest.fixture
def bus() -> InMemoryBus:
    return InMemoryBus(policy=RetryPolicy(max_attempts=3, backoff_s=0.0))


def test_events_arrive_in_order_once_per_group(bus: InMemoryBus) -> None:
    events = [field_event("s1", i) for i in range(5)]
    for event in events:
        bus.publish(event)
    first: list[Envelope] = []
    second: list[Envelope] = []
    a = bus.consumer(group="a", topics=["fields.ingested"], handler=first.append)
    b = bus.consumer(group="b", topics=["fields.ingested"], handler=second.append)
    assert a.poll_once() == 5
    assert a.poll_once() == 0
    assert b.poll_once() == 5
    assert first == events == second


def test_a_flaky_handler_is_retried(bus: InMemoryBus) -> None:
    calls: list[str] = []

    def flaky(envelope: Envelope) -> None:
        calls.append(envelope.event_id)
        if len(calls) < 3:
            raise RuntimeError("transient")

    bus.publish(field_event("s1"))
    bus.consumer(group="g", topics=["fields.ingested"], handler=flaky).poll_once()
    assert len(calls) == 3
    assert bus.messages("fields.ingested.dlq") == []


def test_a_failing_handler_sends_to_the_dlq_after_n_tries_and_moves_on(bus: InMemoryBus) -> None:
    seen: list[int] = []

    def handler(envelope: Envelope) -> None:
        index = envelope.parsed(FieldIngested).field_index
        seen.append(index)
        if index == 0:
            raise ValueError("cannot handle field 0")

    bus.publish(field_event("s1", 0))
    bus.publish(field_event("s1", 1))
    bus.consumer(group="g", topics=["fields.ingested"], handler=handler).poll_once()
    assert seen == [0, 0, 0, 1]
    [(key, raw)] = bus.messages("fields.ingested.dlq")
    letter = decode_envelope(raw, topic="fields.ingested.dlq")
    assert key == "s1"
    assert letter.payload["attempts"] == 3
    assert "ValueError: cannot handle field 0" in letter.payload["error"]
    assert (
        decode_envelope(letter.payload["original"].encode()).parsed(FieldIngested).field_index == 0
    )


def test_undecodable_bytes_go_to_the_dlq_without_calling_the_handler(bus: InMemoryBus) -> None:
    handled: list[Envelope] = []
    bus.publish_raw("fields.ingested", "s1", b'{"event_id": "x", "topi')
    bus.publish(field_event("s1"))
    bus.consumer(group="g", topics=["fields.ingested"], handler=handled.append).poll_once()
    assert len(handled) == 1
    [(_, raw)] = bus.messages("fields.ingested.dlq")
    assert "truncated" in decode_envelope(raw).payload["error"]


def test_a_batching_consumer_gathers_up_to_its_limit(bus: InMemoryBus) -> None:
    events = [field_event("s1", i) for i in range(5)]
    for event in events:
        bus.publish(event)
    batches: list[list[Envelope]] = []
    consumer = bus.consumer(
        group="g",
        topics=["fields.ingested"],
        handler=lambda e: batches.append([e]),
        batching=Batching(batches.append, max_messages=2, max_wait_s=0.0),
    )
    assert consumer.poll_once() == 5
    assert [len(b) for b in batches] == [2, 2, 1]
    assert [e for b in batches for e in b] == events
    assert consumer.poll_once() == 0


def test_a_failing_batch_is_handled_event_by_event(bus: InMemoryBus) -> None:
    good, bad = field_event("s1", 0), field_event("s1", 1)
    bus.publish(good)
    bus.publish(bad)
    singles: list[Envelope] = []

    def single(envelope: Envelope) -> None:
        if envelope.event_id == bad.event_id:
            raise ValueError("bad event")
        singles.append(envelope)

    def batch(envelopes: list[Envelope]) -> None:
        for envelope in envelopes:
            single(envelope)

    consumer = bus.consumer(
        group="g", topics=["fields.ingested"], handler=single, batching=Batching(batch)
    )
    assert consumer.poll_once() == 2
    assert singles == [good, good]  # once in the failed batch, once alone
    (letter,) = bus.messages("fields.ingested.dlq")
    assert "bad event" in decode_envelope(letter[1], topic="fields.ingested.dlq").payload["error"]


def test_batching_needs_sane_bounds() -> None:
    with pytest.raises(ValueError, match="max_messages"):
        Batching(print, max_messages=0)
