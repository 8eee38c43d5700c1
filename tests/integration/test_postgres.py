"""The database port on a real Postgres: migrations from empty, CRUD, outbox locking."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import Engine, inspect
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, SQLModel, col, select

from stainless.core.config import DatabaseSettings
from stainless.core.db.engine import create_db_engine, session_scope
from stainless.core.db.migrate import downgrade, upgrade
from stainless.core.db.models import (
    Cell,
    FieldImage,
    Modality,
    ModelVersion,
    OutboxEvent,
    Prediction,
    Registration,
    RegistrationStatus,
    Review,
    TrainingJob,
)
from stainless.core.db.repository import create_slide, get_or_create_scanner
from stainless.core.events import InMemoryBus
from stainless.core.events.outbox import OutboxRelay
from stainless.domain.review import ReviewAction, ReviewStatus
from stainless.stages.ingestion.records import record_field

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def engine(postgres_url: str) -> Engine:
    probe = create_db_engine(DatabaseSettings(url=postgres_url))
    assert inspect(probe).get_table_names() == []  # empty before the first migration
    upgrade(postgres_url)
    return probe


def test_migrations_go_down_and_up_again(engine: Engine, postgres_url: str) -> None:
    downgrade(postgres_url, "base")
    assert set(inspect(engine).get_table_names()) == {"alembic_version"}
    upgrade(postgres_url)
    assert set(SQLModel.metadata.tables) <= set(inspect(engine).get_table_names())


def test_crud_across_every_table(engine: Engine) -> None:
    with session_scope(engine) as session:
        scanner = get_or_create_scanner(session, name="pg-scanner", key_prefix="k", key_hash="h")
        slide = create_slide(
            session,
            scanner_id=scanner.id,
            external_id="PG-1",
            patient_pseudonym="P",
            acquisition={"objective": "100x"},
        )
        record_field(
            session,
            slide_id=slide.id,
            index=0,
            modality=Modality.DIC,
            object_key="raw/pg/0.tif",
            sha256="f" * 64,
            size_bytes=1,
            width=1,
            height=1,
        )
        session.add(
            Registration(
                slide_id=slide.id,
                field_index=0,
                transform=[[1, 0, 2.5], [0, 1, -1.0]],
                ecc_score=0.93,
                status=RegistrationStatus.ACCEPTED,
            )
        )
        cell = Cell(
            slide_id=slide.id, field_index=0, index=0, x0=1, y0=2, x1=30, y1=40, true_class="SNE"
        )
        session.add(cell)
        session.flush()
        prediction = Prediction(
            cell_id=cell.id,
            model_version="mtmd-1",
            predicted_class="SNE",
            probabilities={"SNE": 0.9, "LY": 0.1},
            confidence=0.8,
            uncertainty=0.01,
            review_status=ReviewStatus.NEEDS_REVIEW,
        )
        session.add(prediction)
        session.flush()
        session.add(
            Review(
                cell_id=cell.id,
                prediction_id=prediction.id,
                reviewer="dr-a",
                action=ReviewAction.RECLASSIFY,
                new_class="EO",
            )
        )
        session.add(
            ModelVersion(
                name="stain",
                version=1,
                kind="mtmd",
                checkpoint_key="m/1",
                metrics={"accuracy": 0.9},
            )
        )
        session.add(TrainingJob(model_kind="mtmd", dataset_key="datasets/x.json"))
    with session_scope(engine) as session:
        loaded = session.exec(select(Prediction)).one()
        assert loaded.probabilities == {"SNE": 0.9, "LY": 0.1}
        assert loaded.review_status == ReviewStatus.NEEDS_REVIEW
        loaded.review_status = ReviewStatus.RECLASSIFIED
        session.add(loaded)
        registration = session.exec(select(Registration)).one()
        assert registration.transform == [[1, 0, 2.5], [0, 1, -1.0]]
    with session_scope(engine) as session:
        assert session.exec(select(Prediction)).one().review_status == "reclassified"
        session.delete(session.exec(select(Review)).one())
    with Session(engine) as session:
        assert session.exec(select(Review)).all() == []
        assert len(session.exec(select(FieldImage)).all()) == 1


def test_unique_keys_stop_duplicates(engine: Engine) -> None:
    with pytest.raises(IntegrityError), session_scope(engine) as session:
        session.add(ModelVersion(name="stain", version=1, kind="mtmd", checkpoint_key="m/dup"))


def test_two_relays_never_publish_the_same_row(engine: Engine) -> None:
    from stainless.core.events import Envelope, TrainingRequested
    from stainless.core.events.outbox import add_event

    with session_scope(engine) as session:
        for i in range(40):
            add_event(
                session,
                Envelope.wrap(
                    TrainingRequested(
                        job_id=f"j{i}", model_kind="mtmd", dataset_key="d", workers=1
                    ),
                    key=f"j{i}",
                ),
            )
    bus = InMemoryBus()
    relays = [OutboxRelay(engine, bus, batch_size=3) for _ in range(2)]
    threads = [threading.Thread(target=relay.drain) for relay in relays]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    keys = [key for key, _ in bus.messages("training.requested")]
    assert sorted(keys) == sorted(f"j{i}" for i in range(40))
    with Session(engine) as session:
        pending = session.exec(select(OutboxEvent).where(col(OutboxEvent.published_at).is_(None)))
        assert pending.all() == []


def test_a_locked_batch_is_skipped_not_waited_for(engine: Engine) -> None:
    from stainless.core.events import Envelope, TrainingRequested
    from stainless.core.events.outbox import add_event

    with session_scope(engine) as session:
        add_event(
            session,
            Envelope.wrap(
                TrainingRequested(job_id="locked", model_kind="mtmd", dataset_key="d", workers=1),
                key="locked",
            ),
        )
    bus = InMemoryBus()
    with Session(engine) as holder:
        holder.exec(
            select(OutboxEvent).where(col(OutboxEvent.published_at).is_(None)).with_for_update()
        ).all()
        assert OutboxRelay(engine, bus).publish_pending() == 0
    assert OutboxRelay(engine, bus).publish_pending() == 1


def test_audit_events_and_signed_reports_are_only_ever_added(engine: Engine) -> None:
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    from stainless.core.audit import Actor, add_audit, audit_trail

    with session_scope(engine) as session:
        add_audit(session, Actor("ada", "admin", "10.0.0.7"), "read", "slide:x")
    (event,) = audit_trail(engine, actor="ada")
    for statement in (
        "UPDATE audit_event SET actor = 'mallory'",
        "DELETE FROM audit_event",
        "DELETE FROM signed_report",
        "TRUNCATE audit_event",
    ):
        with pytest.raises(DBAPIError, match="only ever added"), session_scope(engine) as session:
            session.exec(text(statement))  # type: ignore[call-overload]
    assert [e.actor for e in audit_trail(engine, actor="ada")] == ["ada"]
    assert event.client == "10.0.0.7"
