from __future__ import annotations

from sqlmodel import Session, select

from stainless.core.config import DatabaseSettings
from stainless.core.db.engine import create_db_engine
from stainless.core.db.models import ProcessedEvent
from stainless.core.events import Envelope, FieldIngested, InMemoryBus
from stainless.stages.registration.consumers import registration_consumer


def test_each_ingested_field_is_queued_once(sqlite_url: str) -> None:
    engine = create_db_engine(DatabaseSettings(url=sqlite_url))
    queued: list[tuple[str, int]] = []
    bus = InMemoryBus()
    event = Envelope.wrap(
        FieldIngested(
            slide_id="s",
            field_id="f",
            field_index=3,
            modality="BF",
            object_key="raw/s/f.png",
            sha256="1" * 64,
        ),
        key="s",
    )
    bus.publish(event)
    bus.publish(event)  # redelivered
    consumer = registration_consumer(
        bus, engine, lambda slide, index: queued.append((slide, index))
    )
    assert consumer.poll_once() == 2
    assert queued == [("s", 3)]
    with Session(engine) as session:
        assert len(session.exec(select(ProcessedEvent)).all()) == 1
