"""Training requests: checked before anything is written; then running, progress, outcome."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlmodel import Session, select

from stainless.core.config import DatabaseSettings
from stainless.core.db.engine import create_db_engine
from stainless.core.db.models import JobStatus, OutboxEvent, TrainingJob
from stainless.core.events import Topic
from stainless.core.storage.local import LocalObjectStore
from stainless.datasets.manifest import DatasetItem, DatasetManifest, write_manifest
from stainless.stages.retraining.jobs import (
    JobError,
    finish_job,
    get_job,
    record_progress,
    request_training,
    start_job,
)


@pytest.fixture
def world(tmp_path: Path, sqlite_url: str) -> tuple[object, LocalObjectStore, str]:
    store = LocalObjectStore(tmp_path / "store")
    manifest = DatasetManifest(
        name="unit",
        created_at=datetime.now(UTC),
        classes=("ART", "BA", "EO", "LY", "MO", "SNE", "SMU"),
        items=(
            DatasetItem(
                id="c1",
                dic="crops/c1.png",
                bf="crops/c1-bf.png",
                mask=None,
                label="LY",
                source="review",
                slide_id=None,
            ),
        ),
        description="",
    )
    key = write_manifest(store, manifest)
    return create_db_engine(DatabaseSettings(url=sqlite_url)), store, key


def _rows(engine: object) -> tuple[int, int]:
    with Session(engine) as session:  # type: ignore[arg-type]
        return (
            len(session.exec(select(TrainingJob)).all()),
            len(session.exec(select(OutboxEvent)).all()),
        )


def test_a_request_writes_the_job_and_its_event_together(world) -> None:  # type: ignore[no-untyped-def]
    engine, store, key = world
    job = request_training(
        engine, store, model="mtmd", dataset_key=key, workers=2, config={"steps": 9}
    )
    assert (job.status, job.workers, job.config) == (JobStatus.QUEUED, 2, {"steps": 9})
    with Session(engine) as session:
        (event,) = session.exec(select(OutboxEvent)).all()
    assert event.topic == Topic.TRAINING_REQUESTED and job.id in event.payload


@pytest.mark.parametrize(
    ("model", "dataset", "workers", "message"),
    [
        ("resnet", None, 1, "unknown model 'resnet': choose one of mtmd, disentangled, paired"),
        ("mtmd", None, 0, "workers must be at least 1"),
        ("mtmd", "datasets/unit/" + "0" * 64 + ".json", 1, "no snapshot"),
        ("mtmd", "datasets/unit/missing.json", 1, "not a snapshot key"),
    ],
)
def test_bad_requests_write_nothing(
    world, model: str, dataset: str | None, workers: int, message: str
) -> None:  # type: ignore[no-untyped-def]
    engine, store, key = world
    with pytest.raises(JobError, match=message):
        request_training(engine, store, model=model, dataset_key=dataset or key, workers=workers)
    assert _rows(engine) == (0, 0)


def test_a_snapshot_whose_hash_does_not_match_is_refused(world) -> None:  # type: ignore[no-untyped-def]
    engine, store, key = world
    path = store.root / key
    path.write_text(
        path.read_text()
        .replace('"label":"LY"', '"label":"SNE"')
        .replace('"label": "LY"', '"label": "SNE"')
    )
    with pytest.raises(JobError, match="does not match its hash"):
        request_training(engine, store, model="mtmd", dataset_key=key)
    assert _rows(engine) == (0, 0)


def test_a_job_runs_once_and_ends_with_its_outcome(world) -> None:  # type: ignore[no-untyped-def]
    engine, store, key = world
    job = request_training(engine, store, model="paired", dataset_key=key)
    assert start_job(engine, job.id).status is JobStatus.RUNNING
    with pytest.raises(JobError, match="is running, not queued"):
        start_job(engine, job.id)
    record_progress(engine, job.id, {"step": 3, "steps": 10})
    record_progress(engine, job.id, {"step": 4})
    finish_job(engine, job.id, error="RuntimeError: worker lost")
    done = get_job(engine, job.id)
    assert done.status is JobStatus.FAILED and done.error == "RuntimeError: worker lost"
    assert done.progress == {"step": 4, "steps": 10}
    with pytest.raises(JobError, match="no training job"):
        get_job(engine, "nope")


def _snapshot(store: LocalObjectStore, *items: DatasetItem) -> str:
    classes = ("ART", "BA", "EO", "LY", "MO", "SNE", "SMU")
    manifest = DatasetManifest(
        name="lacking", created_at=datetime.now(UTC), classes=classes, items=items, description=""
    )
    return write_manifest(store, manifest)


@pytest.mark.parametrize("model", ["mtmd", "disentangled", "paired"])
def test_a_snapshot_without_what_the_model_trains_on_is_refused_before_anything_runs(
    tmp_path: Path, sqlite_url: str, model: str
) -> None:
    store = LocalObjectStore(tmp_path / "store")
    engine = create_db_engine(DatabaseSettings(url=sqlite_url))
    dic_only = DatasetItem(id="c1", dic="crops/c1.png", label="LY", source="folder")
    unlabelled = DatasetItem(id="c2", dic="crops/c2.png", bf="crops/c2-bf.png", source="pairs")
    with pytest.raises(JobError, match=f"model {model} trains on DIC crops .* 0 with a bright"):
        request_training(engine, store, model=model, dataset_key=_snapshot(store, dic_only))
    assert _rows(engine) == (0, 0)
    key = _snapshot(store, dic_only, unlabelled)
    if model == "paired":
        with pytest.raises(JobError, match=r"and class labels; .* 1 with a brightfield crop, 0 of"):
            request_training(engine, store, model=model, dataset_key=key)
    else:
        assert (
            request_training(engine, store, model=model, dataset_key=key).status.value == "queued"
        )
