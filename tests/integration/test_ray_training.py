"""Retraining on a real local Ray cluster: snapshot in S3 → 2 workers (DDP) → served model.

The data and the checkpoints live in the S3 server and the records in Postgres. A
second test kills one Ray worker mid-run: Ray restarts the group, the run continues
from its last checkpoint and finishes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from sqlmodel import Session, select

from stainless.core.config import (
    ClinicalSettings,
    DatabaseSettings,
    InferenceSettings,
    Settings,
    StoreBackend,
    StoreSettings,
)
from stainless.core.db.engine import create_db_engine
from stainless.core.db.migrate import upgrade
from stainless.core.db.models import JobStatus, ModelVersion, OutboxEvent, TrainingJob
from stainless.core.events import Topic
from stainless.core.inference.local import LocalInference
from stainless.core.inference.manifest import read_manifest
from stainless.core.storage import create_store
from stainless.core.storage.local import LocalObjectStore
from stainless.datasets.importers import import_phantom
from stainless.datasets.phantom import write_phantom_set
from stainless.imaging.phantom_set import phantom_config
from stainless.ml.export.checkpoint import export_checkpoint
from stainless.ml.export.triton import InstanceKind
from stainless.stages.inference.stage import CellStainer
from stainless.stages.retraining.jobs import request_training
from stainless.stages.retraining.promotion import PromotionRefused, adopt_served, promote
from stainless_training.distributed import Storage, run_distributed, store_payload
from stainless_training.jobs import job_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DEMO = Path(__file__).parents[2] / "training/demo_model/checkpoint.pt"
BIN = Path(sys.executable).parent
TINY_RUN = {"steps": 6, "checkpoint_every": 3, "batch_size": 4}


@pytest.fixture
def settings(postgres_url: str, s3_endpoint: str) -> Settings:
    upgrade(postgres_url)
    return Settings(
        database=DatabaseSettings(url=postgres_url),
        store=StoreSettings(
            backend=StoreBackend.S3, endpoint=s3_endpoint, bucket=f"ray-{uuid.uuid4().hex[:8]}"
        ),
    )


@pytest.fixture
def snapshot(settings: Settings, tmp_path: Path) -> str:
    write_phantom_set(
        LocalObjectStore(tmp_path / "phantom"),
        slides=1,
        fields=6,
        seed=5,
        config=phantom_config(width=1024, height=768),
    )
    report = import_phantom(tmp_path / "phantom", create_store(settings.store), name="ray-test")
    assert report.imported >= 8
    return report.key


def _storage(settings: Settings) -> Storage:
    store = settings.store
    return Storage(
        path=f"{store.bucket}/ray",
        endpoint=store.endpoint,
        access_key=store.access_key,
        secret_key=store.secret_key.get_secret_value(),
    )


def test_a_snapshot_trains_on_two_workers_into_a_served_model(
    ray_address: str, settings: Settings, snapshot: str, tmp_path: Path
) -> None:
    engine = create_db_engine(settings.database)
    store = create_store(settings.store)
    # The inference service serves the demo model, registered as the version served.
    repo = tmp_path / "models"
    export_checkpoint(DEMO, repo, instance=InstanceKind.CPU)
    demo = adopt_served(engine, store, repo, DEMO)
    job = request_training(
        engine, store, model="mtmd", dataset_key=snapshot, workers=2, config=TINY_RUN
    )
    # As a KubeRay RayJob's entry point runs it: a new driver on the cluster.
    store_settings = settings.store
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("STAINLESS_")},
        "STAINLESS_DATABASE__URL": settings.database.url,
        "STAINLESS_STORE__BACKEND": "s3",
        "STAINLESS_STORE__ENDPOINT": store_settings.endpoint,
        "STAINLESS_STORE__BUCKET": store_settings.bucket,
        "STAINLESS_STORE__ACCESS_KEY": store_settings.access_key,
        "STAINLESS_STORE__SECRET_KEY": store_settings.secret_key.get_secret_value(),
        "STAINLESS_RAY__ADDRESS": ray_address,
    }
    done = subprocess.run(
        [BIN / "stainless-train-job", job.id, "--rayjob", "retrain-test"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    with Session(engine) as session:
        row = session.get(TrainingJob, job.id)
        assert row is not None and row.model_version_id is not None
        version_id = row.model_version_id
        version = session.get(ModelVersion, version_id)
        topics = [e.topic for e in session.exec(select(OutboxEvent)).all()]
    assert row.status is JobStatus.SUCCEEDED and row.ray_job_id == "retrain-test"
    assert f"model version {version_id}" in done.stdout
    assert row.progress["step"] == 6 and row.progress["workers"] == 2 and row.progress["done"]
    assert version is not None and (version.name, version.version) == ("mtmd-tiny", 2)
    assert store.get(version.checkpoint_key)[:2] == b"PK"  # a torch zip archive
    assert version.metrics["training"]["workers"] == 2
    # evaluated on the snapshot's held-out cells (10 % of the cells, by the hash of their
    # id), too few to set a review threshold, and the demo model on the same cells
    metrics = version.metrics
    assert 3 <= metrics["cells"] < 30 and 0 <= metrics["ssim"] <= 1
    assert "review_threshold" not in metrics and "no review threshold" in metrics["note"]
    assert "fid_provenance" in metrics
    prefix = version.checkpoint_key.rpartition("/")[0]
    assert metrics["plots"] == [f"{prefix}/confusion.png", f"{prefix}/reliability.png"]
    assert all(store.get(key)[:4] == b"\x89PNG" for key in metrics["plots"])
    assert metrics["comparison"]["model"] == "mtmd-tiny/1"
    assert metrics["comparison"]["cells"] == metrics["cells"]
    assert topics == [
        *(Topic.MODELS_REGISTERED, Topic.MODELS_PROMOTED),  # the demo model, served
        *(Topic.TRAINING_REQUESTED, Topic.MODELS_REGISTERED),
    ]

    # The trained version is promoted: too few held-out cells decide nothing, so it is forced.
    stainer = CellStainer(
        store=store,
        inference=LocalInference(repo),
        settings=InferenceSettings(refresh_interval_s=0),
        pathological_classes=ClinicalSettings().pathological_classes,
        repository=lambda: read_manifest(repo),
    )
    assert stainer.model_version == "mtmd-tiny/1"
    with pytest.raises(PromotionRefused, match=r"on [0-9]+ held-out cells: at least 30"):
        promote(engine, store, repo, version_id, instance=InstanceKind.CPU)
    done = promote(
        engine, store, repo, version_id, instance=InstanceKind.CPU, review_threshold=0.5, force=True
    )
    assert done.repository_version == 2 and stainer.refresh()
    assert stainer.model_version == "mtmd-tiny/2" and done.previous_version == demo.version
    assert read_manifest(repo).model_version_id == version_id
    cells = LocalInference(repo).infer(np.zeros((2, 64, 64), np.float32))
    assert len(cells) == 2 and sum(cells[0].probabilities.values()) == pytest.approx(1, abs=1e-4)


def _train_worker_pids() -> list[int]:
    """PIDs of the Ray Train worker processes (Ray titles them ``ray::RayTrainWorker…``)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if b"RayTrainWorker" in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
        except OSError:  # the process ended meanwhile
            continue
    return sorted(found)


def test_a_killed_worker_resumes_from_the_last_checkpoint(
    ray_address: str, settings: Settings, snapshot: str
) -> None:
    config = job_config(
        {**TINY_RUN, "steps": 12, "checkpoint_every": 4}, model="mtmd", dataset_key=snapshot
    )
    storage = _storage(settings)
    name = f"kill-{uuid.uuid4().hex[:6]}"
    killed: list[int] = []

    def kill_one_worker_after_a_checkpoint() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not killed:
            checkpoints = create_store(settings.store).list(f"ray/{name}/")
            pids = _train_worker_pids()
            if any("checkpoint_" in key for key in checkpoints) and pids:
                os.kill(pids[-1], signal.SIGKILL)
                killed.append(pids[-1])
            time.sleep(0.5)

    killer = threading.Thread(target=kill_one_worker_after_a_checkpoint, daemon=True)
    killer.start()
    result = run_distributed(
        config,
        name=name,
        storage=storage,
        workers=2,
        report_every=2,
        store=store_payload(settings.store),
    )
    killer.join(timeout=5)
    assert killed, "no worker was killed: the run ended before its first checkpoint"
    assert result.metrics["step"] == 12
