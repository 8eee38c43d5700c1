from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from stainless.core.events import (
    ALL_TOPICS,
    CellsCropped,
    ConsumerGroup,
    Envelope,
    EventDecodeError,
    FieldIngested,
    Topic,
    decode_envelope,
)
from stainless.core.events.contracts import MAX_DEAD_LETTER_ORIGINAL, PAYLOAD_TYPES, dead_letter

ROOT = Path(__file__).resolve().parents[4]


def _field_event() -> Envelope:
    payload = FieldIngested(
        slide_id="s1",
        field_id="f1",
        field_index=0,
        modality="DIC",
        object_key="raw/s1/f0.tif",
        sha256="a" * 64,
    )
    return Envelope.wrap(payload, key="s1")


def test_round_trip() -> None:
    envelope = _field_event()
    decoded = decode_envelope(envelope.encode(), topic="fields.ingested")
    assert decoded == envelope
    assert decoded.parsed(FieldIngested).object_key == "raw/s1/f0.tif"


def test_every_topic_has_a_payload_and_a_dlq() -> None:
    assert {topic for topic, _ in PAYLOAD_TYPES} == {t.value for t in Topic}
    assert set(ALL_TOPICS) == {t.value for t in Topic} | {f"{t.value}.dlq" for t in Topic}


def test_truncated_payload_is_a_clear_error() -> None:
    raw = _field_event().encode()
    with pytest.raises(
        EventDecodeError, match=r"fields.ingested is not valid JSON \(truncated\?\)"
    ):
        decode_envelope(raw[: len(raw) // 2], topic="fields.ingested")


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda e: e.model_copy(update={"payload": {**e.payload, "sha256": "xyz"}}), "sha256"),
        (lambda e: e.model_copy(update={"version": 9}), "unknown topic/version"),
        (lambda e: e.model_copy(update={"payload": {"slide_id": "s1"}}), "field_id"),
    ],
)
def test_invalid_events_are_refused(mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(EventDecodeError, match=message):
        decode_envelope(mutate(_field_event()).encode())


def test_event_on_the_wrong_topic_is_refused() -> None:
    with pytest.raises(EventDecodeError, match=r"names topic fields\.ingested on cells\.cropped"):
        decode_envelope(_field_event().encode(), topic="cells.cropped")


def test_parsed_checks_the_payload_type() -> None:
    with pytest.raises(EventDecodeError, match=r"not cells\.cropped"):
        _field_event().parsed(CellsCropped)


def test_dead_letter_keeps_the_original_and_the_error() -> None:
    letter = dead_letter(b"{trunc", topic="cells.cropped", consumer="g", error="boom", attempts=0)
    decoded = decode_envelope(letter.encode(), topic="cells.cropped.dlq")
    assert decoded.payload["original"] == "{trunc"
    assert decoded.payload["error"] == "boom"
    assert decoded.payload["original_sha256"] == hashlib.sha256(b"{trunc").hexdigest()
    assert decoded.payload["truncated"] is False


def test_a_dead_letter_always_fits_the_broker() -> None:
    huge = b"x" * (5 * 1024 * 1024)  # over Kafka's default 1 MB message limit
    letter = dead_letter(huge, topic="cells.cropped", consumer="g", error="e" * 10**6, attempts=3)
    encoded = letter.encode()
    assert len(encoded) < 1024 * 1024
    payload = decode_envelope(encoded, topic="cells.cropped.dlq").payload
    assert payload["truncated"] is True and payload["original_bytes"] == len(huge)
    assert payload["original_sha256"] == hashlib.sha256(huge).hexdigest()
    assert len(payload["original"]) == MAX_DEAD_LETTER_ORIGINAL


def test_no_other_module_spells_a_topic_name() -> None:
    contracts = ROOT / "libs" / "stainless" / "core" / "events" / "contracts.py"
    names = "|".join(re.escape(t) for t in Topic)
    pattern = re.compile(rf"""["']({names})(\.dlq)?["']""")
    offenders = [
        str(path.relative_to(ROOT))
        for folder in ("libs", "services", "training")
        for path in (ROOT / folder).rglob("*.py")
        if path != contracts and pattern.search(path.read_text())
    ]
    assert offenders == []


def test_consumer_groups_are_distinct() -> None:
    assert len({g.value for g in ConsumerGroup}) == len(ConsumerGroup)
