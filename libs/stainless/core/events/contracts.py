"""Event contracts: every topic, consumer group and versioned payload of Stainless.

This is the only module that names a topic. Payloads carry ids and object-store
keys, never image bytes. Each event travels in an :class:`Envelope` serialised
as JSON and keyed by the slide id (or the model / job id for training events),
so the events of one slide stay in order on one partition.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

DLQ_SUFFIX = ".dlq"


class Topic(StrEnum):
    """Topic names without the configurable prefix (default ``stainless.``)."""

    FIELDS_INGESTED = "fields.ingested"
    SLIDES_UPLOADED = "slides.uploaded"
    SLIDES_CANCELLED = "slides.cancelled"
    CELLS_CROPPED = "cells.cropped"
    CELLS_STAINED = "cells.stained"
    SLIDES_COMPLETED = "slides.completed"
    REVIEWS_RECORDED = "reviews.recorded"
    REPORTS_SIGNED = "reports.signed"
    TRAINING_REQUESTED = "training.requested"
    MODELS_REGISTERED = "models.registered"
    MODELS_PROMOTED = "models.promoted"

    @property
    def dlq(self) -> str:
        return f"{self.value}{DLQ_SUFFIX}"


ALL_TOPICS: tuple[str, ...] = tuple(t.value for t in Topic) + tuple(t.dlq for t in Topic)


class ConsumerGroup(StrEnum):
    """Consumer groups, one per consuming service (scaling is per group)."""

    REGISTRATION = "stainless-registration"
    INFERENCE = "stainless-inference"
    RESULTS = "stainless-results"
    TRAINING = "stainless-training"
    NOTIFIER = "stainless-notifier"


class EventDecodeError(ValueError):
    """Bytes on a topic that are not a valid event of a known version."""


class Payload(BaseModel):
    """Base of every payload: immutable, strict about unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    TOPIC: ClassVar[str]
    VERSION: ClassVar[int] = 1


class FieldIngested(Payload):
    TOPIC: ClassVar[str] = Topic.FIELDS_INGESTED
    slide_id: str
    field_id: str
    field_index: int = Field(ge=0)
    modality: Literal["DIC", "BF"]
    object_key: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class SlideUploaded(Payload):
    """The scanner says the slide is complete: no more fields will come."""

    TOPIC: ClassVar[str] = Topic.SLIDES_UPLOADED
    slide_id: str
    fields: int = Field(ge=1)


class SlideCancelled(Payload):
    """The scanner withdrew an open slide: it takes no more fields and is never reported."""

    TOPIC: ClassVar[str] = Topic.SLIDES_CANCELLED
    slide_id: str
    fields: int = Field(ge=0, description="Fields uploaded before it was cancelled.")


class CellsCropped(Payload):
    TOPIC: ClassVar[str] = Topic.CELLS_CROPPED
    slide_id: str
    field_index: int = Field(ge=0)
    registration_id: str | None = None
    cell_ids: list[str]


class CellsStained(Payload):
    TOPIC: ClassVar[str] = Topic.CELLS_STAINED
    slide_id: str
    model_version: str
    cell_ids: list[str]


class SlideCompleted(Payload):
    TOPIC: ClassVar[str] = Topic.SLIDES_COMPLETED
    slide_id: str
    cell_count: int = Field(ge=0)
    differential: dict[str, int]
    needs_review: int = Field(ge=0)


class ReviewRecorded(Payload):
    TOPIC: ClassVar[str] = Topic.REVIEWS_RECORDED
    slide_id: str
    cell_id: str
    review_id: str
    action: Literal["confirm", "reclassify", "poor_quality", "undo"]
    new_class: str | None = None
    reviewer: str


class ReportSigned(Payload):
    """A slide's report is final: signed, stored and served unchanged from now on (the
    FHIR DiagnosticReport at ``/v1/slides/{slide_id}/fhir``, whose SHA-256 this is).
    ``slides.completed`` says its preliminary report is ready."""

    TOPIC: ClassVar[str] = Topic.REPORTS_SIGNED
    slide_id: str
    version: int = Field(ge=1)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    signed_by: str


class TrainingRequested(Payload):
    TOPIC: ClassVar[str] = Topic.TRAINING_REQUESTED
    job_id: str
    model_kind: str
    dataset_key: str
    workers: int = Field(ge=1)


class ModelRegistered(Payload):
    TOPIC: ClassVar[str] = Topic.MODELS_REGISTERED
    model_version_id: str
    name: str
    version: int = Field(ge=1)
    checkpoint_key: str


class ModelPromoted(Payload):
    TOPIC: ClassVar[str] = Topic.MODELS_PROMOTED
    model_version_id: str
    name: str
    version: int = Field(ge=1)
    previous_version: int | None = None


class DeadLetter(Payload):
    """What a consumer gave up on: the original bytes (as text, cut to
    ``MAX_DEAD_LETTER_ORIGINAL`` characters so the letter always fits the broker) with
    their SHA-256 and length, and why."""

    TOPIC: ClassVar[str] = "dlq"
    source_topic: str
    consumer: str
    error: str
    attempts: int = Field(ge=0)
    original: str
    original_sha256: str | None = None
    original_bytes: int | None = Field(default=None, ge=0)
    truncated: bool = False


PAYLOAD_TYPES: dict[tuple[str, int], type[Payload]] = {
    (cls.TOPIC, cls.VERSION): cls
    for cls in (
        FieldIngested,
        SlideUploaded,
        SlideCancelled,
        CellsCropped,
        CellsStained,
        SlideCompleted,
        ReviewRecorded,
        ReportSigned,
        TrainingRequested,
        ModelRegistered,
        ModelPromoted,
    )
}

P = TypeVar("P", bound=Payload)


class Envelope(BaseModel):
    """One event as it travels: id, topic, payload version, partition key, payload."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    topic: str
    version: int = Field(ge=1)
    key: str = Field(min_length=1, max_length=128)
    occurred_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    payload: dict[str, Any]

    @classmethod
    def wrap(cls, payload: Payload, *, key: str) -> Envelope:
        return cls(
            topic=payload.TOPIC,
            version=payload.VERSION,
            key=key,
            payload=payload.model_dump(mode="json"),
        )

    def parsed(self, payload_type: type[P]) -> P:
        """The payload as ``payload_type``, which must match this envelope's topic."""
        if (self.topic, self.version) != (payload_type.TOPIC, payload_type.VERSION):
            raise EventDecodeError(
                f"event {self.event_id} is {self.topic} v{self.version}, "
                f"not {payload_type.TOPIC} v{payload_type.VERSION}"
            )
        return payload_type.model_validate(self.payload)

    def encode(self) -> bytes:
        return self.model_dump_json().encode()


MAX_DEAD_LETTER_ORIGINAL = 256 * 1024
"""Characters of the original kept in a dead letter: far below a broker's message limit."""
MAX_DEAD_LETTER_ERROR = 4096


def dead_letter(
    original: Envelope | bytes, *, topic: str, consumer: str, error: str, attempts: int
) -> Envelope:
    """The envelope sent to ``<topic>.dlq`` for an event a consumer gave up on."""
    if isinstance(original, Envelope):
        data, key = original.model_dump_json().encode(), original.key
    else:
        data, key = original, "unkeyed"
    raw = data.decode("utf-8", errors="replace")
    letter = DeadLetter(
        source_topic=topic,
        consumer=consumer,
        error=error[:MAX_DEAD_LETTER_ERROR],
        attempts=attempts,
        original=raw[:MAX_DEAD_LETTER_ORIGINAL],
        original_sha256=hashlib.sha256(data).hexdigest(),
        original_bytes=len(data),
        truncated=len(raw) > MAX_DEAD_LETTER_ORIGINAL,
    )
    return Envelope(
        topic=f"{topic}{DLQ_SUFFIX}",
        version=DeadLetter.VERSION,
        key=key,
        payload=letter.model_dump(mode="json"),
    )


def decode_envelope(raw: bytes, *, topic: str | None = None) -> Envelope:
    """Parse and validate an event from its bytes.

    Args:
        raw: the message value.
        topic: the unprefixed topic it arrived on; the envelope must name the same one.

    Raises:
        EventDecodeError: the bytes are not JSON (e.g. truncated), not an envelope, of an
            unknown topic or version, or the payload does not match its schema.
    """
    where = f" on {topic}" if topic else ""
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EventDecodeError(f"event{where} is not valid JSON (truncated?): {exc}") from None
    try:
        envelope = Envelope.model_validate(data)
    except ValidationError as exc:
        raise EventDecodeError(f"event{where} is not an envelope: {_first(exc)}") from None
    if topic is not None and envelope.topic != topic:
        raise EventDecodeError(f"event {envelope.event_id} names topic {envelope.topic}{where}")
    if envelope.topic.endswith(DLQ_SUFFIX):
        payload_type: type[Payload] | None = DeadLetter
    else:
        payload_type = PAYLOAD_TYPES.get((envelope.topic, envelope.version))
    if payload_type is None:
        raise EventDecodeError(
            f"event {envelope.event_id}: unknown topic/version {envelope.topic} v{envelope.version}"
        )
    try:
        payload_type.model_validate(envelope.payload)
    except ValidationError as exc:
        raise EventDecodeError(
            f"event {envelope.event_id} ({envelope.topic} v{envelope.version}): {_first(exc)}"
        ) from None
    return envelope


def _first(exc: ValidationError) -> str:
    errors = exc.errors()
    head = errors[0]
    where = ".".join(str(p) for p in head["loc"]) or "(root)"
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {head['msg']}{more}"
