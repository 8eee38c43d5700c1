"""Safe model operations on Postgres and S3: the exported demo model is registered as the
version served; a worse candidate, evaluated beside it on the same held-out cells of a
snapshot, is refused by ``stainless promote``; forced, it is served; a rollback returns to
the demo model."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch
import yaml

from stainless.core.config import DatabaseSettings, StoreBackend, StoreSettings
from stainless.core.db.engine import create_db_engine, session_scope
from stainless.core.db.migrate import upgrade
from stainless.core.db.models import ModelStatus
from stainless.core.inference.manifest import read_manifest
from stainless.core.registry import find_version, promoted_version, register_model
from stainless.core.storage import create_store
from stainless.core.storage.local import LocalObjectStore
from stainless.datasets.importers import import_phantom
from stainless.datasets.phantom import write_phantom_set
from stainless.imaging.phantom_set import phantom_config
from stainless.ml.export.checkpoint import export_checkpoint
from stainless.ml.export.triton import InstanceKind
from stainless.ml.models.configs import MultiTaskConfig
from stainless.ml.models.mtmd import build_multitask
from stainless.stages.retraining.comparison import MIN_HELD_OUT_CELLS
from stainless.stages.retraining.promotion import adopt_served, promote
from stainless_training.jobs import _plots, evaluate_checkpoint, job_config
from stainless_training.settings import TrainingSettings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DEMO = Path(__file__).parents[2] / "training/demo_model"
BIN = Path(sys.executable).parent


def _untrained_model_1(folder: Path) -> Path:
    """Model 1 of the demo's size as initialised, before any training: a worse candidate."""
    folder.mkdir()
    torch.manual_seed(0)
    torch.save(
        {"translator": build_multitask(MultiTaskConfig.tiny()).state_dict()}, folder / "c.pt"
    )
    (folder / "config.yaml").write_text((DEMO / "config.yaml").read_text())
    return folder / "c.pt"


def test_a_worse_model_is_refused_and_a_rollback_returns_to_the_demo_model(
    postgres_url: str, s3_endpoint: str, tmp_path: Path
) -> None:
    upgrade(postgres_url)
    settings = TrainingSettings(
        database=DatabaseSettings(url=postgres_url),
        store=StoreSettings(
            backend=StoreBackend.S3, endpoint=s3_endpoint, bucket=f"ops-{uuid.uuid4().hex[:8]}"
        ),
    )
    engine, store = create_db_engine(settings.database), create_store(settings.store)
    write_phantom_set(
        LocalObjectStore(tmp_path / "phantom"),
        slides=1,
        fields=40,
        seed=5,
        config=phantom_config(width=1536, height=1152, acquisition={"wbc_per_field": [6, 8]}),
    )
    snapshot = import_phantom(tmp_path / "phantom", store, name="ops").key
    assert snapshot is not None

    repo = tmp_path / "models"
    export_checkpoint(DEMO / "checkpoint.pt", repo, instance=InstanceKind.CPU)
    adopted = adopt_served(engine, store, repo, DEMO / "checkpoint.pt")
    assert (adopted.name, adopted.version) == ("mtmd-tiny", 1)
    assert read_manifest(repo).model_version == "mtmd-tiny/1"

    # The candidate is evaluated as a training job evaluates its model: on the snapshot's
    # held-out cells, and the served version on the same cells.
    served = promoted_version(engine)
    assert served is not None and served.id == adopted.model_version_id
    training = yaml.safe_load((DEMO / "config.yaml").read_text())
    config = job_config(training, model="mtmd", dataset_key=snapshot)
    metrics = evaluate_checkpoint(settings, config, _untrained_model_1(tmp_path / "c"), served)
    comparison = metrics["comparison"]
    assert comparison["model"] == "mtmd-tiny/1" and comparison["cells"] == metrics["cells"]
    assert metrics["cells"] >= MIN_HELD_OUT_CELLS
    assert metrics["accuracy"] < comparison["accuracy"] - 0.1
    drawn = _plots(metrics, tmp_path)  # what the job stores beside the checkpoint
    assert {p.name for p in drawn} == {"confusion.png", "reliability.png"}  # < 100: no ECE
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in drawn)
    prefix = "models/mtmd/untrained"  # where a training job stores its model
    store.put(f"{prefix}/checkpoint.pt", (tmp_path / "c" / "c.pt").read_bytes())
    store.put(f"{prefix}/config.yaml", (DEMO / "config.yaml").read_bytes())
    with session_scope(engine) as session:
        key = f"{prefix}/checkpoint.pt"
        candidate = register_model(
            session, name="mtmd-tiny", kind="mtmd", checkpoint_key=key, metrics=metrics
        )
        assert candidate.version == 2

    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("STAINLESS_")},
        "STAINLESS_DATABASE__URL": postgres_url,
        "STAINLESS_STORE__BACKEND": "s3",
        "STAINLESS_STORE__ENDPOINT": s3_endpoint,
        "STAINLESS_STORE__BUCKET": settings.store.bucket,
        "STAINLESS_INFERENCE__MODEL_REPOSITORY": str(repo),
    }
    refused = subprocess.run(
        [BIN / "stainless", "promote", "mtmd-tiny/2", "--instance", "cpu"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode == 2, refused.stderr
    assert "refused: mtmd-tiny/2 is worse than the served mtmd-tiny/1" in " ".join(
        refused.stderr.split()
    )
    assert "--force" in refused.stderr and "Traceback" not in refused.stderr
    assert read_manifest(repo).model_version == "mtmd-tiny/1"
    assert find_version(engine, "mtmd-tiny/1").status is ModelStatus.PROMOTED

    # Forced, it is served; a rollback returns to the demo model.
    done = promote(engine, store, repo, "mtmd-tiny/2", instance=InstanceKind.CPU, force=True)
    assert "worse" in done.verdict and read_manifest(repo).model_version == "mtmd-tiny/2"

    back = subprocess.run(
        [BIN / "stainless", "rollback", "--instance", "cpu"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert back.returncode == 0, back.stderr
    assert "rolled back: mtmd-tiny/1" in back.stderr
    assert read_manifest(repo).model_version == "mtmd-tiny/1"
    assert find_version(engine, "mtmd-tiny/1").status is ModelStatus.PROMOTED
    assert find_version(engine, "mtmd-tiny/2").status is ModelStatus.REGISTERED
