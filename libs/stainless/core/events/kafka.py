"""Event bus on Kafka through ``kafka-python``.

Producer: ``acks='all'``, each publish waits for the acknowledgement. Consumers:
one consumer group per service, auto-commit off, the offset of a message is
committed only after the :class:`~stainless.core.events.bus.Dispatcher` handled it or
dead-lettered it. A process that dies before committing gets the message again;
handlers stay safe through the processed-events table.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

import structlog
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import CommitFailedError, TopicAlreadyExistsError
from kafka.structs import OffsetAndMetadata, TopicPartition

from stainless.core.config import BusSettings, KafkaSecurity
from stainless.core.events.bus import Batching, Dispatcher, Handler, RetryPolicy, unprefixed
from stainless.core.events.contracts import Envelope

log = structlog.get_logger(__name__)


def connection_options(settings: BusSettings) -> dict[str, Any]:
    """TLS and SASL options of every Kafka client (kafka-python's names)."""
    options: dict[str, Any] = {"security_protocol": settings.security_protocol.value}
    if settings.security_protocol in (KafkaSecurity.SASL_PLAINTEXT, KafkaSecurity.SASL_SSL):
        options |= {
            "sasl_mechanism": settings.sasl_mechanism.value,
            "sasl_plain_username": settings.sasl_username,
            "sasl_plain_password": settings.sasl_password.get_secret_value(),
        }
    if settings.ssl_cafile is not None:
        options["ssl_cafile"] = str(settings.ssl_cafile)
    return options


def topic_configs(settings: BusSettings) -> dict[str, str]:
    """Configuration of the topics the bus creates."""
    if settings.min_insync_replicas is None:
        return {}
    return {"min.insync.replicas": str(settings.min_insync_replicas)}


class KafkaBus:
    def __init__(self, settings: BusSettings, *, client_id: str = "stainless") -> None:
        self._settings = settings
        self._client_id = client_id
        self._servers = settings.bootstrap_servers.split(",")
        self._connection = connection_options(settings)
        self._producer: KafkaProducer | None = None
        self._lock = threading.Lock()
        self._policy = RetryPolicy(settings.max_attempts, settings.retry_backoff_s)

    @property
    def prefix(self) -> str:
        return self._settings.topic_prefix

    def _get_producer(self) -> KafkaProducer:
        with self._lock:
            if self._producer is None:
                self._producer = KafkaProducer(
                    bootstrap_servers=self._servers,
                    client_id=self._client_id,
                    **self._connection,
                    acks="all",
                    retries=5,
                    linger_ms=0,
                    compression_type="gzip",
                )
            return self._producer

    def ensure_topics(self, topics: Iterable[str]) -> None:
        admin = KafkaAdminClient(
            bootstrap_servers=self._servers, client_id=self._client_id, **self._connection
        )
        try:
            existing = set(admin.list_topics())
            missing = [self.prefix + t for t in topics if self.prefix + t not in existing]
            for name in missing:
                topic = NewTopic(
                    name,
                    num_partitions=self._settings.partitions,
                    replication_factor=self._settings.replication_factor,
                    topic_configs=topic_configs(self._settings),
                )
                with contextlib.suppress(TopicAlreadyExistsError):  # created concurrently
                    admin.create_topics([topic])
        finally:
            admin.close()

    def publish(self, envelope: Envelope) -> None:
        self.publish_raw(envelope.topic, envelope.key, envelope.encode())

    def publish_raw(self, topic: str, key: str, value: bytes) -> None:
        future = self._get_producer().send(self.prefix + topic, key=key.encode(), value=value)
        future.get(timeout=self._settings.request_timeout_s)

    def read_all(self, topic: str) -> list[bytes]:
        name = self.prefix + topic
        client = KafkaConsumer(
            bootstrap_servers=self._servers,
            client_id=f"{self._client_id}-reader",
            **self._connection,
            group_id=None,
            enable_auto_commit=False,
            bootstrap_timeout_ms=int(self._settings.request_timeout_s * 1000),
        )
        try:
            partitions = [
                TopicPartition(name, p) for p in sorted(client.partitions_for_topic(name))
            ]
            if not partitions:
                return []
            client.assign(partitions)
            client.seek_to_beginning(*partitions)
            ends = client.end_offsets(partitions)
            deadline = time.monotonic() + self._settings.request_timeout_s
            values: list[bytes] = []
            while any(client.position(p) < ends[p] for p in partitions):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{name}: not read to its end within the request timeout")
                values += [r.value for rs in client.poll(timeout_ms=500).values() for r in rs]
            return values
        finally:
            client.close()

    def consumer(
        self,
        *,
        group: str,
        topics: Sequence[str],
        handler: Handler,
        batching: Batching | None = None,
    ) -> KafkaEventConsumer:
        dispatcher = Dispatcher(
            group=group, handler=handler, policy=self._policy, send_dead_letter=self.publish
        )
        client = KafkaConsumer(
            *[self.prefix + t for t in topics],
            bootstrap_servers=self._servers,
            client_id=f"{self._client_id}-{group}",
            **self._connection,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=self._settings.session_timeout_ms,
            heartbeat_interval_ms=self._settings.heartbeat_interval_ms,
            max_poll_records=50,
        )
        return KafkaEventConsumer(client, dispatcher, self.prefix, batching)

    def close(self) -> None:
        with self._lock:
            if self._producer is not None:
                self._producer.close()
                self._producer = None


class KafkaEventConsumer:
    def __init__(
        self,
        client: KafkaConsumer,
        dispatcher: Dispatcher,
        prefix: str,
        batching: Batching | None = None,
    ) -> None:
        self._client = client
        self._dispatcher = dispatcher
        self._prefix = prefix
        self._batching = batching

    def poll_once(self, timeout_s: float = 1.0) -> int:
        if self._batching is not None:
            return self._poll_batch(timeout_s)
        batches = self._client.poll(timeout_ms=int(timeout_s * 1000))
        handled = 0
        for partition, records in batches.items():
            for record in records:
                topic = unprefixed(record.topic, self._prefix)
                self._dispatcher.dispatch(topic, record.value)
                if not self._commit({partition: OffsetAndMetadata(record.offset + 1, "", -1)}):
                    return handled
                handled += 1
        return handled

    def _poll_batch(self, timeout_s: float) -> int:
        """Gather up to ``max_messages`` records (waiting ``max_wait_s`` once one arrived)."""
        assert self._batching is not None
        limit = self._batching.max_messages
        records = [r for rs in self._client.poll(int(timeout_s * 1000), limit).values() for r in rs]
        deadline = time.monotonic() + self._batching.max_wait_s
        while records and len(records) < limit and (left := deadline - time.monotonic()) > 0:
            more = self._client.poll(int(left * 1000), limit - len(records))
            records += [r for rs in more.values() for r in rs]
        if not records:
            return 0
        items = [(unprefixed(r.topic, self._prefix), r.value) for r in records]
        self._dispatcher.dispatch_batch(self._batching.handler, items)
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        for record in records:
            partition = TopicPartition(record.topic, record.partition)
            offsets[partition] = OffsetAndMetadata(record.offset + 1, "", -1)
        return len(records) if self._commit(offsets) else 0

    def _commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> bool:
        try:
            self._client.commit(offsets)
        except CommitFailedError as exc:
            # The partition moved to another member during a rebalance: it will get
            # the uncommitted records again, and the handlers are idempotent.
            log.warning("commit failed after rebalance", offsets=str(offsets), error=str(exc))
            return False
        return True

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.poll_once(timeout_s=0.5)

    def close(self) -> None:
        self._client.close()
