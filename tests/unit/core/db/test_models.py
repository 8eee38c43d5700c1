from __future__ import annotations

import pytest
from sqlalchemy import inspect
from sqlalchemy.exc import IntegrityError
from sqlmodel import SQLModel, select

from stainless.core.config import DatabaseSettings
from stainless.core.db.engine import create_db_engine, session_scope
from stainless.core.db.models import FieldImage, Modality, Prediction, Slide
from stainless.core.db.repository import create_slide, get_or_create_scanner
from stainless.domain.review import ReviewStatus
from stainless.stages.ingestion.records import record_field


def test_migrations_create_every_table(sqlite_url: str) -> None:
    engine = create_db_engine(DatabaseSettings(url=sqlite_url))
    tables = set(inspect(engine).get_table_names())
    assert set(SQLModel.metadata.tables) <= tables
    assert "alembic_version" in tables


def test_field_row_and_its_event_are_written_together(sqlite_url: str) -> None:
    from stainless.core.db.models import OutboxEvent

    engine = create_db_engine(DatabaseSettings(url=sqlite_url))
    with session_scope(engine) as session:
        scanner = get_or_create_scanner(session, name="s", key_prefix="p", key_hash="h")
        slide = create_slide(
            session, scanner_id=scanner.id, external_id="E1", patient_pseudonym="P"
        )
        record_field(
            session,
            slide_id=slide.id,
            index=0,
            modality=Modality.DIC,
            object_key="raw/x.tif",
            sha256="c" * 64,
            size_bytes=10,
            width=4,
            height=3,
        )
    with pytest.raises(IntegrityError), session_scope(engine) as session:
        record_field(
            session,
            slide_id=slide.id,
            index=1,
            modality=Modality.BF,
            object_key="raw/y.png",
            sha256="d" * 64,
            size_bytes=10,
            width=4,
            height=3,
        )
        record_field(
            session,
            slide_id=slide.id,
            index=0,
            modality=Modality.DIC,
            object_key="raw/x.tif",
            sha256="c" * 64,
            size_bytes=10,
            width=4,
            height=3,
        )
    with session_scope(engine) as session:
        fields = session.exec(select(FieldImage)).all()
        events = session.exec(select(OutboxEvent)).all()
    assert [f.index for f in fields] == [0]
    assert len(events) == 1
    assert fields[0].modality is Modality.DIC or fields[0].modality == "DIC"


def test_enums_and_json_round_trip(sqlite_url: str) -> None:
    engine = create_db_engine(DatabaseSettings(url=sqlite_url))
    with session_scope(engine) as session:
        scanner = get_or_create_scanner(session, name="s", key_prefix="p", key_hash="h")
        slide = create_slide(
            session,
            scanner_id=scanner.id,
            external_id="E1",
            patient_pseudonym="P",
            acquisition={"objective": "100x"},
        )
    with session_scope(engine) as session:
        loaded = session.get(Slide, slide.id)
        assert loaded is not None
        assert loaded.acquisition == {"objective": "100x"}
        assert loaded.status == "open"


def test_foreign_keys_are_enforced_on_sqlite(sqlite_url: str) -> None:
    engine = create_db_engine(DatabaseSettings(url=sqlite_url))
    with pytest.raises(IntegrityError), session_scope(engine) as session:
        session.add(
            Prediction(
                cell_id="missing",
                model_version="v1",
                predicted_class="LY",
                review_status=ReviewStatus.PENDING,
            )
        )
