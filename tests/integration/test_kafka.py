"""The event-bus port on a real Kafka-protocol broker through ``kafka-python``."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select
from typer.testing import CliRunner

from stainless.cli.main import app
from stainless.core.config import BusBackend, BusSettings, DatabaseSettings
from stainless.core.db.engine import create_db_engine
from stainless.core.db.migrate import upgrade
from stainless.core.db.models import ProcessedEvent, Scanner
from stainless.core.events import (
    Consumer,
    Envelope,
    EventBus,
    FieldIngested,
    SlideCompleted,
    create_bus,
    decode_envelope,
)
from stainless.core.events.bus import Batching
from stainless.core.events.dead_letters import read_letters, replay
from stainless.core.events.idempotency import IdempotentHandler

from ..support.events import field_event

pytestmark = pytest.mark.integration
HERE = Path(__file__).parent


def _settings(bootstrap: str, prefix: str, **extra: object) -> BusSettings:
    return BusSettings(
        backend=BusBackend.KAFKA,
        bootstrap_servers=bootstrap,
        topic_prefix=prefix,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
        retry_backoff_s=0.0,
        partitions=2,
        **extra,
    )  # type: ignore[arg-type]


def _poll_until(consumer: Consumer, done: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, "timed out waiting for events"
        consumer.poll_once(timeout_s=0.5)


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}."


@pytest.fixture
def bus(kafka_bootstrap: str, prefix: str) -> EventBus:
    created = create_bus(_settings(kafka_bootstrap, prefix))
    created.ensure_topics(["fields.ingested", "fields.ingested.dlq"])
    yield created
    created.close()


def test_keyed_events_keep_their_order_per_slide(bus: EventBus) -> None:
    sent = [field_event(slide, i) for i in range(4) for slide in ("s1", "s2", "s3")]
    for envelope in sent:
        bus.publish(envelope)
    received: list[Envelope] = []
    consumer = bus.consumer(group="order", topics=["fields.ingested"], handler=received.append)
    try:
        _poll_until(consumer, lambda: len(received) == len(sent))
    finally:
        consumer.close()
    for slide in ("s1", "s2", "s3"):
        indexes = [e.parsed(FieldIngested).field_index for e in received if e.key == slide]
        assert indexes == [0, 1, 2, 3]


def test_committed_events_are_not_redelivered(bus: EventBus) -> None:
    bus.publish(field_event("s1", 0))
    first: list[Envelope] = []
    consumer = bus.consumer(group="resume", topics=["fields.ingested"], handler=first.append)
    _poll_until(consumer, lambda: len(first) == 1)
    consumer.close()
    bus.publish(field_event("s1", 1))
    second: list[Envelope] = []
    consumer = bus.consumer(group="resume", topics=["fields.ingested"], handler=second.append)
    try:
        _poll_until(consumer, lambda: len(second) == 1)
        consumer.poll_once(timeout_s=1.0)
    finally:
        consumer.close()
    assert [e.parsed(FieldIngested).field_index for e in second] == [1]


def test_failing_handler_goes_to_the_dlq_and_the_consumer_moves_on(
    kafka_bootstrap: str, prefix: str
) -> None:
    bus = create_bus(_settings(kafka_bootstrap, prefix, max_attempts=3))
    bus.ensure_topics(["fields.ingested", "fields.ingested.dlq"])
    attempts: list[int] = []
    handled: list[int] = []
    mended = False

    def handler(envelope: Envelope) -> None:
        index = envelope.parsed(FieldIngested).field_index
        attempts.append(index)
        if index == 0 and not mended:
            raise RuntimeError("always fails")
        handled.append(index)

    bus.publish(field_event("s1", 0))
    bus.publish(field_event("s1", 1))
    bus.publish_raw("fields.ingested", "s1", b'{"event_id": "cut-sh')
    consumer = bus.consumer(group="dlq", topics=["fields.ingested"], handler=handler)
    letters: list[Envelope] = []
    dlq_reader = bus.consumer(
        group="dlq-reader", topics=["fields.ingested.dlq"], handler=letters.append
    )
    try:
        _poll_until(consumer, lambda: handled == [1])
        _poll_until(dlq_reader, lambda: len(letters) == 2)
    finally:
        consumer.close()
        dlq_reader.close()
    assert attempts == [0, 0, 0, 1]
    # the two letters have different keys, so they may sit on different partitions
    failed, undecodable = sorted(letters, key=lambda e: e.payload["attempts"], reverse=True)
    assert failed.payload["attempts"] == 3
    assert "RuntimeError: always fails" in failed.payload["error"]
    assert (
        decode_envelope(failed.payload["original"].encode()).parsed(FieldIngested).field_index == 0
    )
    assert undecodable.payload["attempts"] == 0
    assert "not valid JSON" in undecodable.payload["error"]

    # The cause mended, the letter replayed: the group that gave up handles the event.
    read = read_letters(bus, "fields.ingested")
    assert sorted(letter.unreplayable is None for letter in read) == [False, True]
    result = replay(bus, read)
    assert [letter.event_id for letter in result.replayed] == [_original_id(failed)]
    assert len(result.skipped) == 1
    mended = True
    again = bus.consumer(group="dlq", topics=["fields.ingested"], handler=handler)
    try:
        _poll_until(again, lambda: handled == [1, 0])
    finally:
        again.close()
        bus.close()


def _original_id(letter: Envelope) -> str:
    return decode_envelope(letter.payload["original"].encode()).event_id


def test_the_dlq_command_lists_and_replays_against_the_broker(
    kafka_bootstrap: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    bus = create_bus(_settings(kafka_bootstrap, prefix, max_attempts=1))
    bus.ensure_topics(["slides.completed", "slides.completed.dlq"])
    event = Envelope.wrap(
        SlideCompleted(slide_id="s9", cell_count=3, differential={"LY": 3}, needs_review=0),
        key="s9",
    )
    bus.publish(event)

    def refuse(envelope: Envelope) -> None:
        raise RuntimeError("endpoint down")

    consumer = bus.consumer(group="notify", topics=["slides.completed"], handler=refuse)
    try:
        _poll_until(consumer, lambda: len(bus.read_all("slides.completed.dlq")) == 1)
    finally:
        consumer.close()
    for name, value in {
        "STAINLESS_BUS__BACKEND": "kafka",
        "STAINLESS_BUS__BOOTSTRAP_SERVERS": kafka_bootstrap,
        "STAINLESS_BUS__TOPIC_PREFIX": prefix,
    }.items():
        monkeypatch.setenv(name, value)
    listed = CliRunner().invoke(app, ["dlq", "list", "--topic", "slides.completed", "--json"])
    assert listed.exit_code == 0, listed.output
    (row,) = [json.loads(line) for line in listed.stdout.splitlines()]
    assert row["event_id"] == event.event_id and row["consumer"] == "notify"
    assert row["replayable"] and "endpoint down" in row["error"]
    replayed = CliRunner().invoke(app, ["dlq", "replay", "slides.completed", "--all"])
    assert replayed.exit_code == 0, replayed.output
    assert bus.read_all("slides.completed")[-1] == event.encode()
    bus.close()


@pytest.fixture
def engine(postgres_url: str) -> Engine:
    upgrade(postgres_url)
    return create_db_engine(DatabaseSettings(url=postgres_url))


def test_consumer_killed_before_commit_gets_the_event_again_without_duplicates(
    bus: EventBus, kafka_bootstrap: str, prefix: str, postgres_url: str, engine: Engine
) -> None:
    event = field_event("crash", 0)
    bus.publish(event)
    crashed = subprocess.run(
        [
            sys.executable,
            str(HERE / "kafka_crash_consumer.py"),
            kafka_bootstrap,
            prefix,
            "crashing",
            postgres_url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert crashed.returncode == 17, crashed.stderr[-2000:]
    name = f"from-{event.event_id}"
    with Session(engine) as session:
        assert len(session.exec(select(Scanner).where(Scanner.name == name)).all()) == 1

    deliveries: list[str] = []

    def insert(session: Session, envelope: Envelope) -> None:
        session.add(Scanner(name=f"from-{envelope.event_id}", key_prefix="k", key_hash="h"))

    idempotent = IdempotentHandler(engine, "crashing", insert)

    def handler(envelope: Envelope) -> None:
        deliveries.append(envelope.event_id)
        idempotent(envelope)

    consumer = bus.consumer(group="crashing", topics=["fields.ingested"], handler=handler)
    try:
        _poll_until(consumer, lambda: len(deliveries) == 1, timeout_s=60)
    finally:
        consumer.close()
    assert deliveries == [event.event_id]
    with Session(engine) as session:
        assert len(session.exec(select(Scanner).where(Scanner.name == name)).all()) == 1
        marker = session.get(ProcessedEvent, ("crashing", event.event_id))
        assert marker is not None
    again: list[str] = []
    consumer = bus.consumer(
        group="crashing", topics=["fields.ingested"], handler=lambda e: again.append(e.event_id)
    )
    try:
        for _ in range(6):
            consumer.poll_once(timeout_s=1.0)
    finally:
        consumer.close()
    assert again == []


def test_a_batching_consumer_commits_what_it_gathered(bus: EventBus) -> None:
    sent = [field_event("s1", i) for i in range(5)]
    for envelope in sent:
        bus.publish(envelope)
    batches: list[list[Envelope]] = []
    consumer = bus.consumer(
        group="batches",
        topics=["fields.ingested"],
        handler=lambda e: batches.append([e]),
        batching=Batching(batches.append, max_messages=3, max_wait_s=0.5),
    )
    try:
        _poll_until(consumer, lambda: sum(len(b) for b in batches) == len(sent))
    finally:
        consumer.close()
    assert max(len(b) for b in batches) <= 3 and len(batches) >= 2
    assert sorted(e.event_id for b in batches for e in b) == sorted(e.event_id for e in sent)
    later = field_event("s1", 5)
    bus.publish(later)
    again: list[Envelope] = []
    consumer = bus.consumer(group="batches", topics=["fields.ingested"], handler=again.append)
    try:
        _poll_until(consumer, lambda: len(again) == 1)
        consumer.poll_once(timeout_s=1.0)
    finally:
        consumer.close()
    assert again == [later]  # the gathered events were committed
