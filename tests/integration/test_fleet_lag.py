"""The fleet benchmark's consumer lag and task queue, read from a real Kafka broker and
a real Redis."""

from __future__ import annotations

import uuid

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.structs import OffsetAndMetadata

from stainless.bench.fleet import _lag, _TaskQueue

pytestmark = pytest.mark.integration


def test_lag_is_what_a_group_has_not_committed(kafka_bootstrap: str) -> None:
    topic, group = f"lag-{uuid.uuid4().hex[:8]}", f"group-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    for n in range(5):  # a batch each: this broker ends a partition at the last batch's start
        producer.send(topic, value=str(n).encode())
        producer.flush()
    producer.close()
    reader = KafkaConsumer(bootstrap_servers=kafka_bootstrap)
    try:
        assert _lag(admin, reader, group) == 0  # a group that never committed
        member = KafkaConsumer(
            bootstrap_servers=kafka_bootstrap, group_id=group, enable_auto_commit=False
        )
        partition = TopicPartition(topic, 0)
        member.assign([partition])
        member.commit({partition: OffsetAndMetadata(2, None, -1)})
        member.close()
        assert _lag(admin, reader, group) == 3
    finally:
        reader.close()
        admin.close()


def test_the_task_queue_counts_the_tasks_waiting(redis_url: str) -> None:
    import redis

    url = f"{redis_url}/15"  # a database of its own
    queue = _TaskQueue(url)
    client = redis.Redis.from_url(url)
    try:
        client.delete("celery")
        assert queue.waiting() == 0
        client.lpush("celery", "a", "b", "c")
        assert queue.waiting() == 3
    finally:
        client.delete("celery")
        client.close()
        queue.close()
