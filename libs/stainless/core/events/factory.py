"""Choose the event-bus adapter from settings."""

from __future__ import annotations

from stainless.core.config import BusBackend, BusSettings
from stainless.core.events.bus import EventBus, InMemoryBus, RetryPolicy


def create_bus(settings: BusSettings, *, client_id: str = "stainless") -> EventBus:
    if settings.backend is BusBackend.KAFKA:
        from stainless.core.events.kafka import KafkaBus

        return KafkaBus(settings, client_id=client_id)
    policy = RetryPolicy(settings.max_attempts, settings.retry_backoff_s)
    return InMemoryBus(policy=policy, prefix=settings.topic_prefix)
