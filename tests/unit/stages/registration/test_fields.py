"""FieldProcessor on embedded defaults: crop, wait, reject, DIC-only, and run twice."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from stainless.core.config import DatabaseSettings, RegistrationSettings
from stainless.core.db.engine import create_db_engine, session_scope
from stainless.core.db.models import Cell, FieldImage, Modality, OutboxEvent, Registration
from stainless.core.db.repository import create_slide, get_or_create_scanner
from stainless.core.events import CellsCropped, decode_envelope
from stainless.core.storage.local import LocalObjectStore
from stainless.datasets.phantom import write_slide
from stainless.imaging.codecs import decode, probe
from stainless.imaging.detection import UnreliableFieldError
from stainless.imaging.phantom_set import phantom_config
from stainless.stages.ingestion.records import record_field
from stainless.stages.registration.fields import FieldProcessor, Outcome, build_field_processor


@pytest.fixture
def engine(sqlite_url: str) -> Engine:
    return create_db_engine(DatabaseSettings(url=sqlite_url))


@pytest.fixture
def store(tmp_path: Path) -> LocalObjectStore:
    return LocalObjectStore(tmp_path / "store")


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> tuple[LocalObjectStore, dict]:  # type: ignore[type-arg]
    folder = LocalObjectStore(tmp_path_factory.mktemp("phantom"))
    entry = write_slide(
        folder,
        prefix="p",
        slide_index=0,
        fields=2,
        seed=21,
        config=phantom_config(width=768, height=576),
    )
    return folder, entry


def _processor(engine: Engine, store: LocalObjectStore) -> FieldProcessor:
    return build_field_processor(RegistrationSettings(), engine=engine, store=store)


def _ingest(
    engine: Engine,
    store: LocalObjectStore,
    phantom,
    *,
    dic_only: bool = False,  # type: ignore[no-untyped-def]
    swap_bf: bool = False,
    modalities: tuple[str, ...] = ("dic", "bf"),
    received: bool = False,
    truncated: str | None = None,
) -> str:
    """A slide with field 0 recorded; ``received``: stored as a raw upload arrives (not yet
    decoded), ``truncated``: that modality's bytes cut short (its header intact)."""
    source, entry = phantom
    with session_scope(engine) as session:
        scanner = get_or_create_scanner(session, name="s", key_prefix="p", key_hash="h")
        slide = create_slide(
            session,
            scanner_id=scanner.id,
            external_id=f"E{dic_only}{swap_bf}",
            patient_pseudonym="P",
            dic_only=dic_only,
        )
        field = entry["fields"][0]
        for name in modalities:
            key = entry["fields"][1 if (swap_bf and name == "bf") else 0][name]
            data = source.get(key)
            if name == truncated:
                data = data[: len(data) // 3]
            object_key = f"raw/{slide.id}/{name}" + (".received" if received else "")
            store.put(object_key, data)
            record_field(
                session,
                slide_id=slide.id,
                index=0,
                modality=Modality.DIC if name == "dic" else Modality.BF,
                object_key=object_key,
                canonical=not received,
                sha256=hashlib.sha256(data).hexdigest(),
                size_bytes=len(data),
                width=field["width"],
                height=field["height"],
            )
        return slide.id


def test_a_registered_pair_becomes_cells_with_crops_and_one_event(engine, store, phantom) -> None:  # type: ignore[no-untyped-def]
    slide_id = _ingest(engine, store, phantom)
    result = _processor(engine, store).process(slide_id, 0)
    assert result.outcome is Outcome.CROPPED
    assert result.ecc is not None and result.ecc > 0.9
    truth = len(phantom[1]["fields"][0]["cells"])
    assert abs(result.cells - truth) <= 1
    with Session(engine) as session:
        cells = session.exec(select(Cell)).all()
        events = [
            decode_envelope(e.payload.encode())
            for e in session.exec(select(OutboxEvent))
            if e.topic == "cells.cropped"
        ]
    assert len(cells) == result.cells
    for cell in cells:
        for key in (
            cell.dic_crop_key,
            cell.bf_crop_key,
            cell.review_crop_key,
            cell.review_bf_crop_key,
        ):
            assert key is not None and store.exists(key)
    [event] = events
    assert sorted(event.parsed(CellsCropped).cell_ids) == sorted(c.id for c in cells)

    again = _processor(engine, store).process(slide_id, 0)
    assert again.outcome is Outcome.ALREADY_DONE
    with Session(engine) as session:
        assert len(session.exec(select(Cell)).all()) == len(cells)
        assert len(session.exec(select(Registration)).all()) == 1


def test_uploads_stored_as_received_are_decoded_and_replaced_by_their_pixels(  # type: ignore[no-untyped-def]
    engine, store, phantom
) -> None:
    slide_id = _ingest(engine, store, phantom, received=True)
    originals = {name: store.get(f"raw/{slide_id}/{name}.received") for name in ("dic", "bf")}
    result = _processor(engine, store).process(slide_id, 0)
    assert result.outcome is Outcome.CROPPED and result.cells > 0
    with Session(engine) as session:
        fields = {f.modality: f for f in session.exec(select(FieldImage))}
    assert all(f.canonical for f in fields.values())
    assert sorted(store.list(f"raw/{slide_id}/")) == sorted(  # the uploads as received: gone
        f.object_key for f in fields.values()
    )
    for name, modality in (("dic", Modality.DIC), ("bf", Modality.BF)):
        stored = _pixels(store.get(fields[modality].object_key))
        assert np.array_equal(stored, _pixels(originals[name]))


def test_an_upload_that_does_not_decode_rejects_its_field_with_the_reason(  # type: ignore[no-untyped-def]
    engine, store, phantom
) -> None:
    slide_id = _ingest(engine, store, phantom, received=True, truncated="bf")
    result = _processor(engine, store).process(slide_id, 0)
    assert result.outcome is Outcome.REJECTED
    assert result.reason is not None and "does not decode" in result.reason
    with Session(engine) as session:
        [registration] = session.exec(select(Registration)).all()
        topics = [e.topic for e in session.exec(select(OutboxEvent))]
    assert "does not decode" in (registration.reason or "")
    assert topics.count("cells.cropped") == 1  # no cells, but the slide can complete
    assert store.exists(f"raw/{slide_id}/bf.received")  # kept for whoever looks into it


def _pixels(data: bytes) -> np.ndarray:
    stream = io.BytesIO(data)
    return decode(stream, probe(stream))


def test_a_field_waits_for_its_other_modality(engine, store, phantom) -> None:  # type: ignore[no-untyped-def]
    slide_id = _ingest(engine, store, phantom, modalities=("dic",))
    assert _processor(engine, store).process(slide_id, 0).outcome is Outcome.WAITING
    with Session(engine) as session:
        assert session.exec(select(Registration)).all() == []


def test_an_unrelated_pair_is_rejected_with_the_reason(engine, store, phantom) -> None:  # type: ignore[no-untyped-def]
    slide_id = _ingest(engine, store, phantom, swap_bf=True)
    result = _processor(engine, store).process(slide_id, 0)
    assert result.outcome is Outcome.REJECTED
    assert result.reason
    with Session(engine) as session:
        [row] = session.exec(select(Registration)).all()
        assert row.status == "rejected" and row.reason == result.reason
        assert session.exec(select(Cell)).all() == []


def test_dic_only_slides_are_cropped_from_dic(engine, store, phantom) -> None:  # type: ignore[no-untyped-def]
    slide_id = _ingest(engine, store, phantom, dic_only=True, modalities=("dic",))
    result = _processor(engine, store).process(slide_id, 0)
    assert result.outcome is Outcome.CROPPED and result.cells >= 1
    with Session(engine) as session:
        cells = session.exec(select(Cell)).all()
        [row] = session.exec(select(Registration)).all()
    assert row.transform is None and row.reason and "DIC-only" in row.reason
    assert all(c.bf_crop_key is None and c.dic_crop_key for c in cells)


def test_unknown_slide_is_a_clear_error(engine, store) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(LookupError, match="no slide nope"):
        _processor(engine, store).process("nope", 0)


class _Unreliable:
    """A detector that finds the field's statistics unusable."""

    def detect(self, image: object) -> list[object]:
        raise UnreliableFieldError("only 12 stained pixels")


@pytest.mark.parametrize("dic_only", [False, True])
def test_a_field_too_odd_to_detect_on_is_rejected_with_the_reason(
    engine,
    store,
    phantom,
    dic_only: bool,  # type: ignore[no-untyped-def]
) -> None:
    slide_id = _ingest(
        engine,
        store,
        phantom,
        dic_only=dic_only,
        modalities=("dic",) if dic_only else ("dic", "bf"),
    )
    processor = _processor(engine, store)
    if dic_only:
        processor._dic_detector = _Unreliable()
    else:
        processor._bf_detector = _Unreliable()
    result = processor.process(slide_id, 0)
    assert result.outcome is Outcome.REJECTED
    assert result.reason == "detection unreliable: only 12 stained pixels"
    with Session(engine) as session:
        row = session.exec(select(Registration)).one()
        assert row.reason == result.reason
        assert (row.transform is None) is dic_only
        assert session.exec(select(Cell)).all() == []
