from __future__ import annotations

import pytest

from stainless.core.events import Envelope, FieldIngested, InMemoryBus, RetryPolicy
from stainless.core.events.contracts import MAX_DEAD_LETTER_ORIGINAL, dead_letter
from stainless.core.events.dead_letters import read_letter, read_letters, replay

from ....support.events import field_event

TOPIC = "fields.ingested"


@pytest.fixture
def bus() -> InMemoryBus:
    return InMemoryBus(policy=RetryPolicy(max_attempts=2, backoff_s=0.0))


def _fail_all(bus: InMemoryBus, group: str = "g") -> list[int]:
    seen: list[int] = []

    def handler(envelope: Envelope) -> None:
        seen.append(envelope.parsed(FieldIngested).field_index)
        raise RuntimeError("endpoint down")

    bus.consumer(group=group, topics=[TOPIC], handler=handler).poll_once()
    return seen


def test_a_letter_says_who_gave_up_why_and_on_which_event(bus: InMemoryBus) -> None:
    event = field_event()
    bus.publish(event)
    _fail_all(bus)
    (letter,) = read_letters(bus, TOPIC)
    assert (letter.source_topic, letter.consumer, letter.attempts) == (TOPIC, "g", 2)
    assert "RuntimeError: endpoint down" in letter.error
    assert letter.event_id == event.event_id and letter.key == "s1"
    assert letter.original == event.encode() and letter.unreplayable is None


def test_a_replayed_event_is_handled_again_by_the_group_that_gave_up(bus: InMemoryBus) -> None:
    events = [field_event(), field_event(index=1)]
    for event in events:
        bus.publish(event)
    handled: list[Envelope] = []
    consumer = bus.consumer(group="g", topics=[TOPIC], handler=handled.append)
    _fail_all(bus)  # another consumer of group g gives up on both
    consumer.poll_once()
    assert handled == []

    result = replay(bus, read_letters(bus, TOPIC), {events[1].event_id})
    assert [letter.event_id for letter in result.replayed] == [events[1].event_id]
    assert consumer.poll_once() == 1
    assert handled == [events[1]]  # the same event, byte for byte


def test_an_event_dead_lettered_twice_is_replayed_once(bus: InMemoryBus) -> None:
    bus.publish(field_event())
    _fail_all(bus, "a")
    _fail_all(bus, "b")
    assert len(read_letters(bus, TOPIC)) == 2
    result = replay(bus, read_letters(bus, TOPIC))
    assert len(result.replayed) == 1
    assert len(bus.messages(TOPIC)) == 2


@pytest.mark.parametrize(
    ("letter", "reason"),
    [
        (
            dead_letter(b"not json", topic=TOPIC, consumer="g", error="bad", attempts=0),
            "the original is not an event",
        ),
        (
            dead_letter(b"\xff\xfe", topic=TOPIC, consumer="g", error="bad", attempts=0),
            "not UTF-8",
        ),
        (
            dead_letter(
                b"x" * (MAX_DEAD_LETTER_ORIGINAL + 1),
                topic=TOPIC,
                consumer="g",
                error="big",
                attempts=0,
            ),
            "was cut",
        ),
    ],
)
def test_a_letter_that_cannot_be_replayed_says_why_and_is_skipped(
    bus: InMemoryBus, letter: Envelope, reason: str
) -> None:
    bus.publish(letter)
    (read,) = read_letters(bus, TOPIC)
    assert read.original is None and reason in (read.unreplayable or "")
    result = replay(bus, [read])
    assert result.replayed == [] and result.skipped == [read]
    assert bus.messages(TOPIC) == []


def test_bytes_on_a_dlq_that_are_no_letter_are_reported() -> None:
    letter = read_letter(f"{TOPIC}.dlq", b"garbage")
    assert letter.unreplayable == "not a dead letter" and "not valid JSON" in letter.error
