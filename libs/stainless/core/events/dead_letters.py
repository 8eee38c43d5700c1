"""Dead letters: what ``<topic>.dlq`` holds, and putting an original back on its topic.

A consumer that gives up on an event sends a
:class:`~stainless.core.events.contracts.DeadLetter` with the original and the cause. Once
the cause is mended (an endpoint back up, a bug fixed), :func:`replay` publishes the
original envelope, byte for byte, to the topic it came from. Every consumer records the
event ids it has handled, so a replayed event changes nothing in a group that had handled
it; the group that gave up handles it again, and dead-letters it again if the cause is
still there. A letter whose original was cut or was not an event cannot be replayed, and
says why.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from stainless.core.events.bus import EventBus
from stainless.core.events.contracts import (
    DLQ_SUFFIX,
    DeadLetter,
    EventDecodeError,
    decode_envelope,
)


@dataclass(frozen=True)
class Letter:
    """One message of a DLQ topic, read as a dead letter."""

    dlq_topic: str
    source_topic: str
    consumer: str
    error: str
    attempts: int
    event_id: str | None
    key: str | None
    original: bytes | None
    """The original's exact bytes when it can be replayed; None otherwise."""
    unreplayable: str | None
    """Why the original cannot be replayed; None when it can."""


def read_letter(dlq_topic: str, raw: bytes) -> Letter:
    """``raw`` from ``dlq_topic`` as a :class:`Letter` (one that cannot be read says why)."""
    source = dlq_topic.removesuffix(DLQ_SUFFIX)
    try:
        letter = DeadLetter.model_validate(decode_envelope(raw, topic=dlq_topic).payload)
    except EventDecodeError as exc:
        return Letter(dlq_topic, source, "?", str(exc), 0, None, None, None, "not a dead letter")
    data = letter.original.encode()
    reason = None
    if letter.truncated:
        reason = f"the original ({letter.original_bytes} bytes) was cut to fit the letter"
    elif letter.original_sha256 != hashlib.sha256(data).hexdigest():
        reason = "the original was not UTF-8 text, and its bytes were not kept"
    event_id = key = None
    if reason is None:
        try:
            original = decode_envelope(data, topic=letter.source_topic)
            event_id, key = original.event_id, original.key
        except EventDecodeError as exc:
            reason = f"the original is not an event ({exc})"
    return Letter(
        dlq_topic=dlq_topic,
        source_topic=letter.source_topic,
        consumer=letter.consumer,
        error=letter.error,
        attempts=letter.attempts,
        event_id=event_id,
        key=key,
        original=data if reason is None else None,
        unreplayable=reason,
    )


def read_letters(bus: EventBus, source_topic: str) -> list[Letter]:
    """Every letter in ``<source_topic>.dlq`` now, oldest first within a partition."""
    dlq_topic = f"{source_topic}{DLQ_SUFFIX}"
    return [read_letter(dlq_topic, raw) for raw in bus.read_all(dlq_topic)]


@dataclass(frozen=True)
class Replay:
    replayed: list[Letter]
    """One letter per event id put back on its topic."""
    skipped: list[Letter]
    """Chosen letters that cannot be replayed (see ``unreplayable``)."""


def replay(bus: EventBus, letters: Iterable[Letter], event_ids: set[str] | None = None) -> Replay:
    """Publish the original of each letter (of ``event_ids``, or every one) to its source
    topic, once per event id, with its own key so it keeps its partition and order."""
    replayed: dict[str, Letter] = {}
    skipped: list[Letter] = []
    for letter in letters:
        if event_ids is not None and letter.event_id not in event_ids:
            continue
        if letter.original is None or letter.event_id is None or letter.key is None:
            skipped.append(letter)
        elif letter.event_id not in replayed:
            bus.publish_raw(letter.source_topic, letter.key, letter.original)
            replayed[letter.event_id] = letter
    return Replay(replayed=list(replayed.values()), skipped=skipped)


__all__ = ["Letter", "Replay", "read_letter", "read_letters", "replay"]
