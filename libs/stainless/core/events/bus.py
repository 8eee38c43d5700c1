"""Event bus port, the delivery rules both adapters share, and the in-process adapter.

Delivery is at least once. A consumer hands each message to its handler; on an
exception it retries with backoff up to ``max_attempts`` times, then publishes a
:class:`~stainless.core.events.contracts.DeadLetter` to ``<topic>.dlq`` and moves on.
Bytes that are not a valid event go to the DLQ at once. The position of the
group advances only after the handler succeeded or the DLQ took the message.

A consumer may also gather messages (:class:`Batching`: at most ``max_messages``,
waiting at most ``max_wait_s`` for more) and hand them to a batch handler at once;
when the batch fails, each message is handled alone by the rules above, so one bad
message still reaches the DLQ alone and the others are handled.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog
from prometheus_client import Counter

from stainless.core.events.contracts import (
    Envelope,
    EventDecodeError,
    Topic,
    dead_letter,
    decode_envelope,
)

log = structlog.get_logger(__name__)

Handler = Callable[[Envelope], None]
BatchHandler = Callable[[list[Envelope]], None]


@dataclass(frozen=True)
class Batching:
    """Gather up to ``max_messages`` messages, waiting at most ``max_wait_s`` for more."""

    handler: BatchHandler
    max_messages: int = 16
    max_wait_s: float = 0.2

    def __post_init__(self) -> None:
        if self.max_messages < 1 or self.max_wait_s < 0:
            raise ValueError(
                f"need max_messages >= 1 and max_wait_s >= 0, got {self.max_messages}, "
                f"{self.max_wait_s}"
            )


EVENTS_HANDLED = Counter(
    "stainless_events_handled_total", "Events handled by a consumer", ["group", "topic", "outcome"]
)


class HandlerInterrupted(Exception):
    """A handler stopped before finishing (the process is shutting down).

    It is neither retried nor dead-lettered: it propagates out of the consumer, which
    leaves the message unacknowledged, so it is delivered again after the restart.
    """


class EventBus(Protocol):
    def ensure_topics(self, topics: Iterable[str]) -> None:
        """Create the topics (and nothing else) if they do not exist."""
        ...

    def publish(self, envelope: Envelope) -> None:
        """Publish and wait until the bus has durably accepted the event."""
        ...

    def publish_raw(self, topic: str, key: str, value: bytes) -> None:
        """Publish already-encoded bytes (the outbox relay's path)."""
        ...

    def read_all(self, topic: str) -> list[bytes]:
        """Every message in ``topic`` now, from its start, without a consumer group (what
        an operator inspects: the dead letters)."""
        ...

    def consumer(
        self,
        *,
        group: str,
        topics: Sequence[str],
        handler: Handler,
        batching: Batching | None = None,
    ) -> Consumer:
        """A consumer of ``topics`` in ``group``; with ``batching`` it gathers messages."""
        ...

    def close(self) -> None: ...


class Consumer(Protocol):
    def poll_once(self, timeout_s: float = 1.0) -> int:
        """Handle what is available (waiting up to ``timeout_s``); return how many."""
        ...

    def run(self, stop: threading.Event) -> None:
        """Handle messages until ``stop`` is set."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 3
    backoff_s: float = 0.5

    def delay(self, attempt: int) -> float:
        return float(self.backoff_s * 2 ** (attempt - 1))


class Dispatcher:
    """Decode, handle with retries, dead-letter: the rules every consumer follows."""

    def __init__(
        self,
        *,
        group: str,
        handler: Handler,
        policy: RetryPolicy,
        send_dead_letter: Callable[[Envelope], None],
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._group = group
        self._handler = handler
        self._policy = policy
        self._send_dead_letter = send_dead_letter
        self._sleep = sleep

    def dispatch(self, topic: str, raw: bytes) -> bool:
        """Handle one message; True if handled, False if it went to the DLQ."""
        envelope = self._decode(topic, raw)
        return envelope is not None and self._handle(topic, envelope)

    def dispatch_batch(self, batch: BatchHandler, items: Sequence[tuple[str, bytes]]) -> None:
        """Handle ``items`` with one call of ``batch``; if it fails, each message alone."""
        decoded = [(topic, self._decode(topic, raw)) for topic, raw in items]
        envelopes = [(topic, e) for topic, e in decoded if e is not None]
        if not envelopes:
            return
        try:
            batch([e for _, e in envelopes])
        except HandlerInterrupted:
            raise
        except Exception as exc:  # noqa: BLE001 - fall back to the per-message rules
            log.warning(
                "batch failed, handling its events one by one",
                group=self._group,
                events=len(envelopes),
                error=f"{type(exc).__name__}: {exc}",
            )
            for topic, envelope in envelopes:
                self._handle(topic, envelope)
        else:
            for topic, _ in envelopes:
                EVENTS_HANDLED.labels(self._group, topic, "ok").inc()

    def _decode(self, topic: str, raw: bytes) -> Envelope | None:
        try:
            return decode_envelope(raw, topic=topic)
        except EventDecodeError as exc:
            log.warning(
                "undecodable event sent to DLQ", topic=topic, group=self._group, error=str(exc)
            )
            self._dead_letter(raw, topic, str(exc), attempts=0)
            return None

    def _handle(self, topic: str, envelope: Envelope) -> bool:
        for attempt in range(1, self._policy.max_attempts + 1):
            try:
                self._handler(envelope)
            except HandlerInterrupted:
                raise
            except Exception as exc:  # noqa: BLE001 - any handler failure is retried
                error = f"{type(exc).__name__}: {exc}"
                log.warning(
                    "handler failed",
                    topic=topic,
                    group=self._group,
                    event_id=envelope.event_id,
                    attempt=attempt,
                    error=error,
                )
                if attempt == self._policy.max_attempts:
                    self._dead_letter(envelope, topic, error, attempts=attempt)
                    return False
                self._sleep(self._policy.delay(attempt))
            else:
                EVENTS_HANDLED.labels(self._group, topic, "ok").inc()
                return True
        return False  # pragma: no cover - the loop always returns

    def _dead_letter(
        self, original: Envelope | bytes, topic: str, error: str, attempts: int
    ) -> None:
        letter = dead_letter(
            original, topic=topic, consumer=self._group, error=error, attempts=attempts
        )
        self._send_dead_letter(letter)
        EVENTS_HANDLED.labels(self._group, topic, "dead_letter").inc()


def unprefixed(name: str, prefix: str) -> str:
    return name[len(prefix) :] if prefix and name.startswith(prefix) else name


class InMemoryBus:
    """An in-process, append-only log per topic with consumer-group positions.

    The embedded default: everything runs in one process, events are still
    serialised so handlers see exactly what they would see from Kafka.
    """

    def __init__(self, *, policy: RetryPolicy = RetryPolicy(), prefix: str = "stainless.") -> None:
        self._policy = policy
        self._prefix = prefix
        self._log: dict[str, list[tuple[str, bytes]]] = defaultdict(list)
        self._positions: dict[tuple[str, str], int] = defaultdict(int)
        self._lock = threading.Condition()

    def ensure_topics(self, topics: Iterable[str]) -> None:
        with self._lock:
            for topic in topics:
                self._log.setdefault(self._prefix + topic, [])

    def publish(self, envelope: Envelope) -> None:
        self.publish_raw(envelope.topic, envelope.key, envelope.encode())

    def publish_raw(self, topic: str, key: str, value: bytes) -> None:
        with self._lock:
            self._log[self._prefix + topic].append((key, value))
            self._lock.notify_all()

    def read_all(self, topic: str) -> list[bytes]:
        return [raw for _, raw in self.messages(topic)]

    def messages(self, topic: str) -> list[tuple[str, bytes]]:
        """Everything published to ``topic`` so far (for inspection and tests)."""
        with self._lock:
            return list(self._log.get(self._prefix + topic, []))

    def consumer(
        self,
        *,
        group: str,
        topics: Sequence[str],
        handler: Handler,
        batching: Batching | None = None,
    ) -> InMemoryConsumer:
        dispatcher = Dispatcher(
            group=group, handler=handler, policy=self._policy, send_dead_letter=self.publish
        )
        return InMemoryConsumer(self, group, list(topics), dispatcher, batching)

    def _pending(self, group: str, topics: Sequence[str], limit: int) -> list[tuple[str, bytes]]:
        """Up to ``limit`` messages the group has not yet consumed, topic by topic."""
        items: list[tuple[str, bytes]] = []
        with self._lock:
            for topic in topics:
                name = self._prefix + topic
                position = self._positions[(group, name)]
                for _, raw in self._log[name][position : position + limit - len(items)]:
                    items.append((topic, raw))
        return items

    def _advance(self, group: str, topic: str) -> None:
        with self._lock:
            self._positions[(group, self._prefix + topic)] += 1

    def _wait(self, timeout_s: float) -> None:
        with self._lock:
            self._lock.wait(timeout_s)

    def close(self) -> None:
        return None


class InMemoryConsumer:
    def __init__(
        self,
        bus: InMemoryBus,
        group: str,
        topics: list[str],
        dispatcher: Dispatcher,
        batching: Batching | None = None,
    ) -> None:
        self._bus = bus
        self._group = group
        self._topics = topics
        self._dispatcher = dispatcher
        self._batching = batching

    def poll_once(self, timeout_s: float = 0.0) -> int:
        handled = 0
        while items := self._gather():
            if self._batching is None:
                topic, raw = items[0]
                self._dispatcher.dispatch(topic, raw)
            else:
                self._dispatcher.dispatch_batch(self._batching.handler, items)
            for topic, _ in items:
                self._bus._advance(self._group, topic)
            handled += len(items)
        if handled == 0 and timeout_s > 0:
            self._bus._wait(timeout_s)
        return handled

    def _gather(self) -> list[tuple[str, bytes]]:
        if self._batching is None:
            return self._bus._pending(self._group, self._topics, 1)
        limit, wait = self._batching.max_messages, self._batching.max_wait_s
        items = self._bus._pending(self._group, self._topics, limit)
        deadline = time.monotonic() + wait
        while items and len(items) < limit and (left := deadline - time.monotonic()) > 0:
            self._bus._wait(left)
            items = self._bus._pending(self._group, self._topics, limit)
        return items

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.poll_once(timeout_s=0.2)

    def close(self) -> None:
        return None


__all__ = [
    "BatchHandler",
    "Batching",
    "Consumer",
    "Dispatcher",
    "EventBus",
    "Handler",
    "HandlerInterrupted",
    "InMemoryBus",
    "InMemoryConsumer",
    "RetryPolicy",
    "Topic",
    "unprefixed",
]
