"""Events: contracts (topics, payloads), the bus port and its adapters, the outbox."""

from __future__ import annotations

from stainless.core.events.bus import Consumer, EventBus, Handler, InMemoryBus, RetryPolicy
from stainless.core.events.contracts import (
    ALL_TOPICS,
    CellsCropped,
    CellsStained,
    ConsumerGroup,
    DeadLetter,
    Envelope,
    EventDecodeError,
    FieldIngested,
    ModelPromoted,
    ModelRegistered,
    Payload,
    ReviewRecorded,
    SlideCompleted,
    SlideUploaded,
    Topic,
    TrainingRequested,
    decode_envelope,
)
from stainless.core.events.factory import create_bus

__all__ = [
    "ALL_TOPICS",
    "CellsCropped",
    "CellsStained",
    "Consumer",
    "ConsumerGroup",
    "DeadLetter",
    "Envelope",
    "EventBus",
    "EventDecodeError",
    "FieldIngested",
    "Handler",
    "InMemoryBus",
    "ModelPromoted",
    "ModelRegistered",
    "Payload",
    "RetryPolicy",
    "ReviewRecorded",
    "SlideCompleted",
    "SlideUploaded",
    "Topic",
    "TrainingRequested",
    "create_bus",
    "decode_envelope",
]
