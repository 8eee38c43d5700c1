"""The inference consumer: stain, record, flag for review, complete the slide — once."""

from __future__ import annotations

import dataclasses
import shutil
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from stainless.core.config import ClinicalSettings, DatabaseSettings, InferenceSettings
from stainless.core.db.engine import create_db_engine, session_scope
from stainless.core.db.models import (
    Cell,
    FieldImage,
    Modality,
    OutboxEvent,
    Prediction,
    Registration,
    RegistrationStatus,
    Scanner,
    Slide,
    SlideStatus,
)
from stainless.core.events import (
    CellsCropped,
    Envelope,
    InMemoryBus,
    SlideUploaded,
    Topic,
    decode_envelope,
)
from stainless.core.events.bus import HandlerInterrupted
from stainless.core.inference.local import LocalInference
from stainless.core.inference.manifest import read_manifest
from stainless.core.inference.port import F32, CellOutput, InferenceUnavailable
from stainless.core.storage.keys import crop_key
from stainless.core.storage.local import LocalObjectStore
from stainless.domain.review import ReviewStatus
from stainless.domain.served import ServedManifest
from stainless.domain.vocabulary import CLINICAL
from stainless.imaging.codecs import encode_png
from stainless.ml.export.paired_heads import write_paired_repository
from stainless.ml.export.triton import InstanceKind
from stainless.ml.models.configs import PairedConfig
from stainless.ml.models.paired import build_paired_discriminator, build_paired_generator
from stainless.stages.inference.profile import StageProfile
from stainless.stages.inference.stage import CellStainer, inference_consumer

from ....support.repository import add_version

FAST = InferenceSettings(max_batch=2, retry_backoff_s=0.01, retry_max_backoff_s=0.02)
PATHOLOGICAL = ClinicalSettings().pathological_classes


class Flaky:
    """Answers ``InferenceUnavailable`` ``failures`` times, then delegates."""

    def __init__(self, inner: LocalInference, failures: int) -> None:
        self.inner, self.failures, self.calls = inner, failures, 0

    @property
    def manifest(self) -> ServedManifest:
        return self.inner.manifest

    def infer(self, batch: F32, manifest: ServedManifest | None = None) -> list[CellOutput]:
        self.calls += 1
        if self.calls <= self.failures:
            raise InferenceUnavailable("server down")
        return self.inner.infer(batch, manifest)

    def ready(self, manifest: ServedManifest | None = None) -> bool:
        return self.calls >= self.failures and self.inner.ready(manifest)

    def switch(self, manifest: ServedManifest) -> None:
        self.inner.switch(manifest)

    def close(self) -> None:
        return None


@dataclass
class World:
    engine: Engine
    store: LocalObjectStore
    slide_id: str
    cell_ids: dict[int, list[str]]  # field index -> cell ids


def _world(tmp_path: Path, sqlite_url: str, *, fields: int = 2, cells: int = 3) -> World:
    engine = create_db_engine(DatabaseSettings(url=sqlite_url))
    return _another_slide(
        World(engine, LocalObjectStore(tmp_path / "store"), "", {}), fields, cells
    )


def _another_slide(world: World, fields: int = 2, cells: int = 3) -> World:
    """A new slide of ``fields`` fields of ``cells`` cells in the world's database and store."""
    rng = np.random.default_rng(0)
    with session_scope(world.engine) as session:
        scanner = Scanner(name=f"s{uuid.uuid4().hex[:6]}", key_prefix="p", key_hash="h")
        session.add(scanner)
        session.flush()
        slide = Slide(scanner_id=scanner.id, external_id="e", patient_pseudonym="p")
        session.add(slide)
        session.flush()
        ids: dict[int, list[str]] = {}
        for index in range(fields):
            session.add(
                FieldImage(
                    slide_id=slide.id,
                    index=index,
                    modality=Modality.DIC,
                    object_key=f"raw/{index}",
                    sha256="0" * 64,
                    size_bytes=1,
                    width=8,
                    height=8,
                )
            )
            ids[index] = []
            for c in range(cells):
                key = crop_key(f"cells/{slide.id}/{index:04d}/{c:03d}", "dic", 256)
                world.store.put(
                    key, encode_png(rng.integers(0, 30000, (256, 256), dtype=np.uint16))
                )
                cell = Cell(
                    slide_id=slide.id,
                    field_index=index,
                    index=c,
                    x0=0,
                    y0=0,
                    x1=1,
                    y1=1,
                    dic_crop_key=key,
                )
                session.add(cell)
                session.flush()
                ids[index].append(cell.id)
        slide_id = slide.id
    return World(world.engine, world.store, slide_id, ids)


def _crop_field(world: World, index: int, bus: InMemoryBus) -> Envelope:
    with session_scope(world.engine) as session:
        session.add(
            Registration(
                slide_id=world.slide_id, field_index=index, status=RegistrationStatus.ACCEPTED
            )
        )
    event = Envelope.wrap(
        CellsCropped(slide_id=world.slide_id, field_index=index, cell_ids=world.cell_ids[index]),
        key=world.slide_id,
    )
    bus.publish(event)
    return event


def _upload_complete(world: World, bus: InMemoryBus) -> None:
    with session_scope(world.engine) as session:
        slide = session.get(Slide, world.slide_id)
        assert slide is not None
        slide.status = SlideStatus.UPLOADED
        session.add(slide)
    bus.publish(Envelope.wrap(SlideUploaded(slide_id=world.slide_id, fields=2), key=world.slide_id))


def _events(engine: Engine, topic: str) -> list[Envelope]:
    with Session(engine) as session:
        rows = session.exec(select(OutboxEvent).where(OutboxEvent.topic == topic)).all()
        return [decode_envelope(r.payload.encode(), topic=topic) for r in rows]


def test_a_slide_is_stained_and_completed_once(
    tmp_path: Path, sqlite_url: str, exported_repo: Path
) -> None:
    world = _world(tmp_path, sqlite_url)
    local = LocalInference(exported_repo)
    bus = InMemoryBus()
    profile = StageProfile()
    consumer = inference_consumer(
        bus,
        world.engine,
        CellStainer(
            store=world.store,
            inference=local,
            settings=FAST,
            pathological_classes=PATHOLOGICAL,
            profile=profile,
        ),
    )
    _upload_complete(world, bus)
    _crop_field(world, 0, bus)
    consumer.poll_once()
    with Session(world.engine) as session:
        assert session.get(Slide, world.slide_id).status is SlideStatus.PROCESSING  # type: ignore[union-attr]
    assert _events(world.engine, Topic.SLIDES_COMPLETED) == []
    bus.publish(_crop_field(world, 1, bus))  # delivered twice
    consumer.poll_once()
    with Session(world.engine) as session:
        predictions = session.exec(select(Prediction)).all()
        assert session.get(Slide, world.slide_id).status is SlideStatus.COMPLETED  # type: ignore[union-attr]
    assert len(predictions) == 6 and {p.model_version for p in predictions} == {"mtmd-tiny/1"}
    for p in predictions:
        assert world.store.get(p.stain_key or "").startswith(b"\x89PNG")
        assert world.store.get(p.heatmap_key or "").startswith(b"\x89PNG")
        assert sum(p.probabilities.values()) == pytest.approx(1, abs=1e-4)
        assert p.confidence is not None and p.confidence > 0
        assert p.confidence_variant == "whole-latent"  # the manifest's variant, recorded
    stained = _events(world.engine, Topic.CELLS_STAINED)
    assert sorted(len(e.payload["cell_ids"]) for e in stained) == [3, 3]
    (completed,) = _events(world.engine, Topic.SLIDES_COMPLETED)
    assert completed.payload["cell_count"] == 6
    assert sum(completed.payload["differential"].values()) == 6
    # two rounds of 3 cells in micro-batches of at most 2; every phase took its time
    assert profile.batch_sizes == [2, 1, 2, 1]
    assert all(seconds > 0 for seconds in profile.seconds.values()), profile.seconds


def test_a_signed_slide_is_frozen(tmp_path: Path, sqlite_url: str, exported_repo: Path) -> None:
    world = _world(tmp_path, sqlite_url)
    bus = InMemoryBus()
    stainer = CellStainer(
        store=world.store,
        inference=LocalInference(exported_repo),
        settings=FAST,
        pathological_classes=PATHOLOGICAL,
    )
    consumer = inference_consumer(bus, world.engine, stainer)
    _upload_complete(world, bus)
    _crop_field(world, 0, bus)
    consumer.poll_once()
    with session_scope(world.engine) as session:
        slide = session.get(Slide, world.slide_id)
        assert slide is not None
        slide.status = SlideStatus.SIGNED
        session.add(slide)
    _crop_field(world, 1, bus)  # a late (or replayed) event for the signed slide
    consumer.poll_once()
    with Session(world.engine) as session:
        predicted = {p.cell_id for p in session.exec(select(Prediction)).all()}
        assert session.get(Slide, world.slide_id).status is SlideStatus.SIGNED  # type: ignore[union-attr]
    assert predicted == set(world.cell_ids[0])  # nothing new on the signed slide
    assert len(_events(world.engine, Topic.CELLS_STAINED)) == 1


def test_low_confidence_and_pathological_cells_need_review(
    tmp_path: Path, sqlite_url: str, exported_repo: Path
) -> None:
    world = _world(tmp_path, sqlite_url, fields=1)
    local = LocalInference(exported_repo)
    with session_scope(world.engine) as session:
        strict = InferenceSettings(review_threshold=100.0)
        CellStainer(
            store=world.store, inference=local, settings=strict, pathological_classes=()
        ).stain(session, world.slide_id, world.cell_ids[0][:2])
        classes = {p.predicted_class for p in session.exec(select(Prediction)).all()}
        relaxed = InferenceSettings(review_threshold=0.0)
        CellStainer(
            store=world.store, inference=local, settings=relaxed, pathological_classes=classes
        ).stain(session, world.slide_id, world.cell_ids[0])
        lenient = InferenceSettings(review_threshold=0.0)
        stainer = CellStainer(
            store=world.store, inference=local, settings=lenient, pathological_classes=()
        )
        assert stainer.stain(session, world.slide_id, world.cell_ids[0]) == []  # all done
        predictions = session.exec(select(Prediction)).all()
    assert [p.review_status for p in predictions] == [ReviewStatus.NEEDS_REVIEW] * 3
    assert [p.review_reasons for p in predictions] == [["low-delta"]] * 2 + [["pathological"]]


class CalibratedClaim(Flaky):
    """The same model, its manifest saying that its probabilities are calibrated."""

    def __init__(self, inner: LocalInference) -> None:
        super().__init__(inner, failures=0)

    @property
    def manifest(self) -> ServedManifest:
        return self.inner.manifest.model_copy(update={"calibrated_probabilities": True})

    def infer(self, batch: F32, manifest: ServedManifest | None = None) -> list[CellOutput]:
        return self.inner.infer(batch)


@pytest.mark.parametrize(
    ("calibrated", "below", "reasons"),
    [
        (True, 1.0, ["uncertain-class"]),  # every top probability is under 1
        (True, 0.0, []),
        (True, None, []),
        (False, 1.0, []),  # raw probabilities: the rule does not apply
    ],
)
def test_an_uncertain_class_sends_a_cell_to_review_with_its_reason(
    tmp_path: Path,
    sqlite_url: str,
    exported_repo: Path,
    calibrated: bool,
    below: float | None,
    reasons: list[str],
) -> None:
    world = _world(tmp_path, sqlite_url, fields=1)
    local = LocalInference(exported_repo)
    settings = InferenceSettings(review_threshold=0.0, review_below_probability=below)
    with session_scope(world.engine) as session:
        CellStainer(
            store=world.store,
            inference=CalibratedClaim(local) if calibrated else local,
            settings=settings,
            pathological_classes=(),
        ).stain(session, world.slide_id, world.cell_ids[0])
        predictions = session.exec(select(Prediction)).all()
    assert [p.review_reasons for p in predictions] == [reasons] * 3
    status = ReviewStatus.NEEDS_REVIEW if reasons else ReviewStatus.PENDING
    assert {p.review_status for p in predictions} == {status}


def test_an_unavailable_server_is_waited_for(
    tmp_path: Path, sqlite_url: str, exported_repo: Path
) -> None:
    world = _world(tmp_path, sqlite_url, fields=1)
    flaky = Flaky(LocalInference(exported_repo), failures=3)
    with session_scope(world.engine) as session:
        stainer = CellStainer(
            store=world.store, inference=flaky, settings=FAST, pathological_classes=PATHOLOGICAL
        )
        assert len(stainer.stain(session, world.slide_id, world.cell_ids[0])) == 3
    assert flaky.calls == 3 + 2  # three refusals, then two micro-batches (2 + 1 cells)


def test_stopping_while_the_server_is_down_leaves_the_event_for_later(
    tmp_path: Path, sqlite_url: str, exported_repo: Path
) -> None:
    world = _world(tmp_path, sqlite_url, fields=1)
    stop = threading.Event()
    stop.set()
    bus = InMemoryBus()
    stainer = CellStainer(
        store=world.store,
        inference=Flaky(LocalInference(exported_repo), failures=1),
        settings=FAST,
        pathological_classes=PATHOLOGICAL,
        stop=stop,
    )
    consumer = inference_consumer(bus, world.engine, stainer)
    _crop_field(world, 0, bus)
    with pytest.raises(HandlerInterrupted):
        consumer.poll_once()
    assert bus.messages(Topic.CELLS_CROPPED.dlq) == []
    with Session(world.engine) as session:
        assert session.exec(select(Prediction)).all() == []
    consumer.poll_once()  # the restarted consumer gets the same event
    with Session(world.engine) as session:
        assert len(session.exec(select(Prediction)).all()) == 3


def test_a_missing_crop_is_dead_lettered_with_its_cause(
    tmp_path: Path, sqlite_url: str, exported_repo: Path
) -> None:
    world = _world(tmp_path, sqlite_url, fields=1)
    with Session(world.engine) as session:
        cell = session.get(Cell, world.cell_ids[0][1])
        assert cell is not None and cell.dic_crop_key is not None
        (world.store.root / cell.dic_crop_key).unlink()
    bus = InMemoryBus()
    stainer = CellStainer(
        store=world.store,
        inference=LocalInference(exported_repo),
        settings=FAST,
        pathological_classes=PATHOLOGICAL,
    )
    consumer = inference_consumer(bus, world.engine, stainer)
    _crop_field(world, 0, bus)
    bus.publish(
        Envelope.wrap(
            CellsCropped(slide_id=world.slide_id, field_index=0, cell_ids=["no-such-cell"]),
            key=world.slide_id,
        )
    )
    consumer.poll_once()
    errors = [
        decode_envelope(raw, topic=Topic.CELLS_CROPPED.dlq).payload["error"]
        for _, raw in bus.messages(Topic.CELLS_CROPPED.dlq)
    ]
    assert len(errors) == 2
    assert "MissingCrop" in errors[0] and cell.dic_crop_key in errors[0]
    assert "no-such-cell" in errors[1]
    with Session(world.engine) as session:
        assert session.exec(select(Prediction)).all() == []
        assert _events(world.engine, Topic.CELLS_STAINED) == []


def test_events_gathered_together_share_one_round_trip(
    tmp_path: Path, sqlite_url: str, exported_repo: Path
) -> None:
    world = _world(tmp_path, sqlite_url)
    counting = Flaky(LocalInference(exported_repo), failures=0)
    bus = InMemoryBus()
    settings = InferenceSettings(max_batch=16, max_events=8, max_wait_s=0.0)
    consumer = inference_consumer(
        bus,
        world.engine,
        CellStainer(
            store=world.store,
            inference=counting,
            settings=settings,
            pathological_classes=PATHOLOGICAL,
        ),
    )
    _upload_complete(world, bus)
    first = _crop_field(world, 0, bus)
    _crop_field(world, 1, bus)
    bus.publish(first)  # a redelivery inside the same gathering
    assert consumer.poll_once() == 4
    assert counting.calls == 1  # six cells of two fields in one request
    with Session(world.engine) as session:
        assert len(session.exec(select(Prediction)).all()) == 6
        assert session.get(Slide, world.slide_id).status is SlideStatus.COMPLETED  # type: ignore[union-attr]
    assert len(_events(world.engine, Topic.SLIDES_COMPLETED)) == 1


def _versions(engine: Engine, slide_id: str) -> list[str]:
    with Session(engine) as session:
        rows = session.exec(
            select(Prediction.model_version)
            .join(Cell, col(Cell.id) == col(Prediction.cell_id))
            .where(Cell.slide_id == slide_id)
        ).all()
    return sorted(rows)


@pytest.fixture
def repo(tmp_path: Path, exported_repo: Path) -> Path:
    """A copy of the exported repository, to promote versions into."""
    copy = tmp_path / "models"
    shutil.copytree(exported_repo, copy)
    return copy


def test_a_slide_begun_before_a_promotion_finishes_on_its_version(
    tmp_path: Path, sqlite_url: str, repo: Path
) -> None:
    world = _world(tmp_path, sqlite_url)
    bus = InMemoryBus()
    stainer = CellStainer(
        store=world.store,
        inference=LocalInference(repo),
        settings=FAST.model_copy(update={"refresh_interval_s": 0.0}),
        pathological_classes=PATHOLOGICAL,
        repository=lambda: read_manifest(repo),
    )
    consumer = inference_consumer(bus, world.engine, stainer)
    _upload_complete(world, bus)
    _crop_field(world, 0, bus)
    consumer.poll_once()
    add_version(repo, 2)
    later = _another_slide(world, fields=1)
    _crop_field(later, 0, bus)
    _crop_field(world, 1, bus)  # the first slide's second field, after the switch
    consumer.poll_once()
    assert stainer.model_version == "mtmd-tiny/2"
    assert _versions(world.engine, world.slide_id) == ["mtmd-tiny/1"] * 6
    assert _versions(world.engine, later.slide_id) == ["mtmd-tiny/2"] * 3
    (completed,) = _events(world.engine, Topic.SLIDES_COMPLETED)
    assert completed.payload["slide_id"] == world.slide_id
    stained = {
        (e.payload["slide_id"], e.payload["model_version"])
        for e in _events(world.engine, Topic.CELLS_STAINED)
    }
    assert stained == {(world.slide_id, "mtmd-tiny/1"), (later.slide_id, "mtmd-tiny/2")}


def test_a_slide_whose_version_is_no_longer_served_is_stained_again_whole(
    tmp_path: Path, sqlite_url: str, repo: Path
) -> None:
    world = _world(tmp_path, sqlite_url)
    bus = InMemoryBus()

    def consumer() -> Any:
        stainer = CellStainer(
            store=world.store,
            inference=LocalInference(repo),
            settings=FAST,
            pathological_classes=PATHOLOGICAL,
        )
        return inference_consumer(bus, world.engine, stainer)

    _upload_complete(world, bus)
    _crop_field(world, 0, bus)
    consumer().poll_once()
    add_version(repo, 2)  # and the process restarts: it serves version 2 only
    _crop_field(world, 1, bus)
    consumer().poll_once()
    assert _versions(world.engine, world.slide_id) == ["mtmd-tiny/1"] * 3 + ["mtmd-tiny/2"] * 6
    (completed,) = _events(world.engine, Topic.SLIDES_COMPLETED)
    assert completed.payload["cell_count"] == 6


@pytest.fixture(scope="module")
def clinical_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny model 3 of the twelve clinical classes that takes 360 px crops."""
    net = dataclasses.replace(PairedConfig.tiny(), n_classes=len(CLINICAL.classes))
    torch.manual_seed(0)
    repo = tmp_path_factory.mktemp("clinical-repository")
    write_paired_repository(
        build_paired_generator(net),
        build_paired_discriminator(net),
        repo,
        name="paired-tiny-clinical",
        image_size=net.image_size,
        crop_size=360,
        classes=CLINICAL.classes,
        review_threshold=0.5,
        instance=InstanceKind.CPU,
    )
    return repo


def test_a_model_of_360_px_crops_stains_the_review_crops(
    tmp_path: Path, sqlite_url: str, clinical_repo: Path
) -> None:
    world = _world(tmp_path, sqlite_url, fields=2, cells=2)
    rng = np.random.default_rng(1)
    with session_scope(world.engine) as session:  # field 1's cells are cropped at 360 px too
        for cell_id in world.cell_ids[1]:
            cell = session.get(Cell, cell_id)
            assert cell is not None and cell.dic_crop_key is not None
            cell.review_crop_key = crop_key(f"review/{cell.id}", "dic", 360)
            world.store.put(
                cell.review_crop_key, encode_png(rng.integers(0, 30000, (360, 360), np.uint16))
            )
            session.add(cell)
    bus = InMemoryBus()
    stainer = CellStainer(
        store=world.store,
        inference=LocalInference(clinical_repo),
        settings=FAST,
        pathological_classes=PATHOLOGICAL,
    )
    consumer = inference_consumer(bus, world.engine, stainer)
    _crop_field(world, 0, bus)
    _crop_field(world, 1, bus)
    consumer.poll_once()
    errors = [
        decode_envelope(raw, topic=Topic.CELLS_CROPPED.dlq).payload["error"]
        for _, raw in bus.messages(Topic.CELLS_CROPPED.dlq)
    ]
    assert len(errors) == 1 and "takes 360 px crops" in errors[0] and "at 256 px" in errors[0]
    with Session(world.engine) as session:
        predictions = session.exec(select(Prediction)).all()
    assert sorted(p.cell_id for p in predictions) == sorted(world.cell_ids[1])
    for prediction in predictions:
        assert list(prediction.probabilities) == list(CLINICAL.classes)
        assert prediction.predicted_class in CLINICAL.classes
        assert prediction.confidence_variant == "whole-latent-unmasked"
        assert prediction.model_version == "paired-tiny-clinical/1"
