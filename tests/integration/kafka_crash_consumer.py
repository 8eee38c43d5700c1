"""Run as a script by test_kafka: handle one event, then die where the offset commit would be.

Arguments: bootstrap servers, topic prefix, consumer group, database URL.
"""

from __future__ import annotations

import os
import sys

import kafka
from sqlmodel import Session

from stainless.core.config import BusBackend, BusSettings, DatabaseSettings
from stainless.core.db.engine import create_db_engine
from stainless.core.db.models import Scanner
from stainless.core.events import Envelope, create_bus
from stainless.core.events.idempotency import IdempotentHandler


def _die_instead_of_committing(*_: object, **__: object) -> None:
    os._exit(17)


def main() -> None:
    servers, prefix, group, url = sys.argv[1:5]
    kafka.KafkaConsumer.commit = _die_instead_of_committing  # type: ignore[method-assign]
    engine = create_db_engine(DatabaseSettings(url=url))

    def handler(session: Session, envelope: Envelope) -> None:
        session.add(Scanner(name=f"from-{envelope.event_id}", key_prefix="k", key_hash="h"))

    bus = create_bus(
        BusSettings(
            backend=BusBackend.KAFKA,
            bootstrap_servers=servers,
            topic_prefix=prefix,
            session_timeout_ms=6000,
            heartbeat_interval_ms=1000,
        )
    )
    consumer = bus.consumer(
        group=group, topics=["fields.ingested"], handler=IdempotentHandler(engine, group, handler)
    )
    for _ in range(60):
        consumer.poll_once(timeout_s=1.0)
    sys.exit(3)  # never got the event


if __name__ == "__main__":
    main()
