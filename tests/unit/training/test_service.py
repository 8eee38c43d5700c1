"""The training service's handler: a job runs once; failures end on the job row, not the DLQ."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from stainless.config import DatabaseSettings, Settings, StoreSettings
from stainless.datasets.manifest import DatasetItem, DatasetManifest, write_manifest
from stainless.db.engine import create_db_engine
from stainless.db.models import JobStatus
from stainless.events import Envelope, InMemoryBus, RetryPolicy, Topic, TrainingRequested
from stainless.jobs import get_job, request_training, start_job
from stainless.storage.local import LocalObjectStore
from stainless_training.service import training_consumer


def test_bad_settings_fail_the_job_and_a_redelivery_is_skipped(
    tmp_path: Path, sqlite_url: str
) -> None:
    settings = Settings(
        database=DatabaseSettings(url=sqlite_url), store=StoreSettings(root=tmp_path / "store")
    )
    store = LocalObjectStore(tmp_path / "store")
    item = DatasetItem(
        id="c", dic="d.png", bf=None, mask=None, label="LY", source="review", slide_id=None
    )
    key = write_manifest(
        store,
        DatasetManifest(
            name="svc",
            created_at=datetime.now(UTC),
            classes=("ART", "BA", "EO", "LY", "MO", "SNE", "SMU"),
            items=(item,),
            description="",
        ),
    )
    engine = create_db_engine(settings.database)
    failing = request_training(engine, store, model="mtmd", dataset_key=key, config={"steps": 2})
    taken = request_training(engine, store, model="mtmd", dataset_key=key)
    start_job(engine, taken.id)  # another replica runs it already
    bus = InMemoryBus(policy=RetryPolicy(max_attempts=2, backoff_s=0.0))
    for job in (failing, taken):
        payload = TrainingRequested(job_id=job.id, model_kind="mtmd", dataset_key=key, workers=1)
        bus.publish(Envelope.wrap(payload, key=job.id))
    assert training_consumer(bus, settings).poll_once() == 2
    failed = get_job(engine, failing.id)
    assert failed.status is JobStatus.FAILED
    assert "a phased schedule needs at least 6 steps" in (failed.error or "")
    assert get_job(engine, taken.id).status is JobStatus.RUNNING
    assert bus.messages(Topic.TRAINING_REQUESTED.dlq) == []
