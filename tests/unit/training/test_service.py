"""The training service's handler: a job runs once; failures end on the job row, not the DLQ."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import httpx

from stainless.core.config import DatabaseSettings, Settings, StoreSettings
from stainless.core.db.engine import create_db_engine
from stainless.core.db.models import JobStatus
from stainless.core.events import Envelope, InMemoryBus, RetryPolicy, Topic, TrainingRequested
from stainless.core.storage.local import LocalObjectStore
from stainless.datasets.manifest import DatasetItem, DatasetManifest, write_manifest
from stainless.stages.retraining.jobs import get_job, request_training, start_job
from stainless_training.kuberay import RayJobSubmitter
from stainless_training.service import RunOnRay, SubmitRayJob, training_consumer

TEMPLATE = (
    "kind: RayJob\nmetadata: {name: ${name}}\nspec: {entrypoint: run ${job_id}, n: ${workers}}\n"
)


def _snapshot(store: LocalObjectStore) -> str:
    item = DatasetItem(
        id="c", dic="d.png", bf="b.png", mask=None, label="LY", source="review", slide_id=None
    )
    return write_manifest(
        store,
        DatasetManifest(
            name="svc",
            created_at=datetime.now(UTC),
            classes=("ART", "BA", "EO", "LY", "MO", "SNE", "SMU"),
            items=(item,),
            description="",
        ),
    )


def _request(bus: InMemoryBus, job_id: str, key: str) -> None:
    payload = TrainingRequested(job_id=job_id, model_kind="mtmd", dataset_key=key, workers=2)
    bus.publish(Envelope.wrap(payload, key=job_id))


def test_bad_settings_fail_the_job_and_a_redelivery_is_skipped(
    tmp_path: Path, sqlite_url: str
) -> None:
    settings = Settings(
        database=DatabaseSettings(url=sqlite_url), store=StoreSettings(root=tmp_path / "store")
    )
    store = LocalObjectStore(tmp_path / "store")
    key = _snapshot(store)
    engine = create_db_engine(settings.database)
    failing = request_training(engine, store, model="mtmd", dataset_key=key, config={"steps": 2})
    taken = request_training(engine, store, model="mtmd", dataset_key=key)
    start_job(engine, taken.id)  # another replica runs it already
    bus = InMemoryBus(policy=RetryPolicy(max_attempts=2, backoff_s=0.0))
    for job in (failing, taken):
        _request(bus, job.id, key)
    assert training_consumer(bus, RunOnRay(settings)).poll_once() == 2
    failed = get_job(engine, failing.id)
    assert failed.status is JobStatus.FAILED
    assert "a phased schedule needs at least 6 steps" in (failed.error or "")
    assert get_job(engine, taken.id).status is JobStatus.RUNNING
    assert bus.messages(Topic.TRAINING_REQUESTED.dlq) == []


def test_queued_jobs_are_submitted_as_rayjobs_once_and_refusals_fail_the_job(
    tmp_path: Path, sqlite_url: str
) -> None:
    store = LocalObjectStore(tmp_path / "store")
    key = _snapshot(store)
    engine = create_db_engine(DatabaseSettings(url=sqlite_url))
    queued = request_training(engine, store, model="mtmd", dataset_key=key, workers=2)
    refused = request_training(engine, store, model="mtmd", dataset_key=key)
    running = request_training(engine, store, model="mtmd", dataset_key=key)
    start_job(engine, running.id)
    created: list[dict[str, object]] = []

    def api(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if refused.id in body["spec"]["entrypoint"]:
            return httpx.Response(422, json={"message": "spec.x: Invalid value"})
        if body in created:
            return httpx.Response(409, json={"message": "already exists"})
        created.append(body)
        return httpx.Response(201, json=body)

    client = httpx.Client(base_url="https://api.test", transport=httpx.MockTransport(api))
    launch = SubmitRayJob(engine, RayJobSubmitter(TEMPLATE, client, "stainless"))
    bus = InMemoryBus(policy=RetryPolicy(max_attempts=2, backoff_s=0.0))
    for job in (queued, queued, refused, running):
        _request(bus, job.id, key)
    assert training_consumer(bus, launch).poll_once() == 4
    assert [body["spec"] for body in created] == [{"entrypoint": f"run {queued.id}", "n": 2}]
    assert get_job(engine, queued.id).status is JobStatus.QUEUED  # the RayJob starts it
    failed = get_job(engine, refused.id)
    assert failed.status is JobStatus.FAILED
    assert "HTTP 422 spec.x: Invalid value" in (failed.error or "")
    assert get_job(engine, running.id).status is JobStatus.RUNNING
    assert bus.messages(Topic.TRAINING_REQUESTED.dlq) == []
