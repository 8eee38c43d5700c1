"""Registry and promotion: a registered version becomes the served one; rollback; the switch."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from sqlalchemy import Engine
from sqlmodel import Session, select

from stainless.core.config import ClinicalSettings, DatabaseSettings, InferenceSettings
from stainless.core.db.engine import create_db_engine
from stainless.core.db.models import ModelStatus, ModelVersion, OutboxEvent
from stainless.core.events import Topic
from stainless.core.inference.local import LocalInference
from stainless.core.inference.manifest import read_manifest
from stainless.core.registry import RegistryError, find_version, register_checkpoint, registered
from stainless.core.storage.local import LocalObjectStore
from stainless.ml.export.checkpoint import export_checkpoint
from stainless.ml.export.triton import InstanceKind
from stainless.ml.models.configs import DisentangledConfig, PairedConfig
from stainless.ml.models.disentangled import build_disentangled
from stainless.ml.models.paired import build_paired_discriminator, build_paired_generator
from stainless.stages.inference.stage import CellStainer
from stainless.stages.retraining.promotion import PromotionRefused, adopt_served, promote, rollback

ROOT = Path(__file__).parents[4]
DEMO = ROOT / "training" / "demo_model"


def _register(engine: Engine, store: LocalObjectStore, run: str, **extra: object) -> ModelVersion:
    prefix = f"models/mtmd/{run}"
    store.put(f"{prefix}/checkpoint.pt", (DEMO / "checkpoint.pt").read_bytes())
    store.put(f"{prefix}/config.yaml", (DEMO / "config.yaml").read_bytes())
    fields = {
        "name": "mtmd-tiny",
        "kind": "mtmd",
        "checkpoint_key": f"{prefix}/checkpoint.pt",
        "metrics": {"review_threshold": 0.5},
    }
    return registered(engine, **{**fields, **extra})  # type: ignore[arg-type]


def _compared(served: ModelVersion, threshold: float, accuracy: float = 0.9) -> dict[str, object]:
    """Metrics of a candidate its training compared with ``served`` on 45 held-out cells."""
    comparison = {"model_version_id": served.id, "model": f"{served.name}/{served.version}"}
    return {
        "review_threshold": threshold,
        "cells": 45,
        "accuracy": accuracy,
        "ssim": 0.8,
        "comparison": {**comparison, "cells": 45, "accuracy": 0.85, "ssim": 0.8},
    }


def test_versions_promote_switch_and_roll_back(tmp_path: Path, sqlite_url: str) -> None:
    engine = create_db_engine(DatabaseSettings(url=sqlite_url))
    store = LocalObjectStore(tmp_path / "store")
    repo = tmp_path / "models"
    first = _register(engine, store, "a")
    second = _register(engine, store, "b", metrics=_compared(first, 0.6))
    assert (first.version, second.version) == (1, 2)
    assert find_version(engine, "mtmd-tiny/2").id == second.id

    done = promote(engine, store, repo, first.id, instance=InstanceKind.CPU, mirror_prefix="triton")
    assert (done.repository_version, done.previous_version) == (1, None)
    assert read_manifest(repo).model_version_id == first.id
    assert store.get("triton/stainless.json") == (repo / "stainless.json").read_bytes()
    assert (repo / "stain_confidence" / "1").is_dir()

    stainer = CellStainer(
        store=store,
        inference=LocalInference(repo),
        settings=InferenceSettings(),
        pathological_classes=ClinicalSettings().pathological_classes,
        repository=lambda: read_manifest(repo),
    )
    assert stainer.model_version == "mtmd-tiny/1" and stainer.refresh() is False

    done = promote(engine, store, repo, "mtmd-tiny/2", instance=InstanceKind.CPU)
    assert (done.repository_version, done.previous_version) == (2, 1)
    assert stainer.refresh() is True
    assert (stainer.model_version, stainer.review_threshold) == ("mtmd-tiny/2", 0.6)

    done = rollback(engine, store, repo, instance=InstanceKind.CPU)
    assert (done.version, done.repository_version) == (1, 3)
    assert read_manifest(repo).model_version_id == first.id
    with Session(engine) as session:
        statuses = {v.version: v.status for v in session.exec(select(ModelVersion)).all()}
        topics = [e.topic for e in session.exec(select(OutboxEvent)).all()]
    assert statuses == {1: ModelStatus.PROMOTED, 2: ModelStatus.REGISTERED}
    assert topics.count(Topic.MODELS_PROMOTED) == 3 and topics.count(Topic.MODELS_REGISTERED) == 2


def test_what_cannot_be_promoted_says_why(tmp_path: Path, sqlite_url: str) -> None:
    engine = create_db_engine(DatabaseSettings(url=sqlite_url))
    store = LocalObjectStore(tmp_path / "store")
    repo = tmp_path / "models"
    with pytest.raises(RegistryError, match="no model version mtmd-tiny/9"):
        promote(engine, store, repo, "mtmd-tiny/9")
    other = _register(engine, store, "p", kind="segmenter", name="unet-tiny")
    with pytest.raises(RegistryError, match="are served, not segmenter"):
        promote(engine, store, repo, other.id)
    bare = _register(engine, store, "c", metrics={})
    with pytest.raises(RegistryError, match="no calibrated review threshold"):
        promote(engine, store, repo, bare.id)
    with pytest.raises(RegistryError, match="nothing is served"):
        rollback(engine, store, repo)
    assert not repo.exists()


def _register_model_2(engine: Engine, store: LocalObjectStore, folder: Path) -> ModelVersion:
    """A random tiny model 2 registered with a calibrated threshold."""
    torch.manual_seed(0)
    translator = build_disentangled(DisentangledConfig.tiny())
    buffer = io.BytesIO()
    torch.save({"translator": translator.state_dict()}, buffer)
    prefix = "models/disentangled/m2"
    store.put(f"{prefix}/checkpoint.pt", buffer.getvalue())
    config = Path(__file__).parents[4] / "training" / "configs" / "disentangled-tiny.yaml"
    store.put(f"{prefix}/config.yaml", config.read_bytes())
    return registered(
        engine,
        name="disentangled-tiny",
        kind="disentangled",
        checkpoint_key=f"{prefix}/checkpoint.pt",
        metrics={"review_threshold": 1.5},
    )


def test_model_2_is_served_with_a_model_1_classifier(tmp_path: Path, sqlite_url: str) -> None:
    engine = create_db_engine(DatabaseSettings(url=sqlite_url))
    store = LocalObjectStore(tmp_path / "store")
    repo = tmp_path / "models"
    model_2 = _register_model_2(engine, store, tmp_path)
    with pytest.raises(RegistryError, match="model 2 has no classifier"):
        promote(engine, store, repo, model_2.id, instance=InstanceKind.CPU)
    with pytest.raises(RegistryError, match="the classifier must be model 1"):
        promote(engine, store, repo, model_2.id, classifier=model_2.id)
    model_1 = _register(engine, store, "a")
    promote(engine, store, repo, model_1.id, instance=InstanceKind.CPU)

    with pytest.raises(PromotionRefused, match="not compared with the served mtmd-tiny/1"):
        promote(engine, store, repo, "disentangled-tiny/1", instance=InstanceKind.CPU)
    promote(engine, store, repo, "disentangled-tiny/1", instance=InstanceKind.CPU, force=True)
    manifest = read_manifest(repo)
    assert (manifest.name, manifest.model_version_id, manifest.k) == (
        "disentangled-tiny",
        model_2.id,
        20,
    )
    assert (manifest.confidence_variant, manifest.classifier) == ("disentangled", "mtmd-tiny/1")
    assert manifest.review_threshold == 1.5
    [cell] = LocalInference(repo).infer(np.full((1, 64, 64), 0.5, np.float32))
    assert set(cell.probabilities) == set(manifest.classes) and np.isfinite(cell.delta)
    # Promoted again, model 2 keeps the classifier it was served with.
    done = promote(engine, store, repo, model_2.id, instance=InstanceKind.CPU)
    assert done.repository_version == 3 and read_manifest(repo).classifier == "mtmd-tiny/1"
    done = rollback(engine, store, repo, instance=InstanceKind.CPU)
    assert read_manifest(repo).model_version_id == model_1.id


def test_a_clinical_model_3_is_promoted_with_its_crop_size(tmp_path: Path, sqlite_url: str) -> None:
    engine = create_db_engine(DatabaseSettings(url=sqlite_url))
    store = LocalObjectStore(tmp_path / "store")
    net = dataclasses.replace(PairedConfig.tiny(), n_classes=12)
    torch.manual_seed(0)
    state = {
        "generator": build_paired_generator(net).state_dict(),
        "critic": build_paired_discriminator(net).state_dict(),
    }
    buffer = io.BytesIO()
    torch.save(state, buffer)
    prefix = "models/paired/run"
    store.put(f"{prefix}/checkpoint.pt", buffer.getvalue())
    store.put(
        f"{prefix}/config.yaml", (ROOT / "training/configs/paired-clinical.yaml").read_bytes()
    )
    version = registered(
        engine,
        name="paired-tiny-clinical",
        kind="paired",
        checkpoint_key=f"{prefix}/checkpoint.pt",
        metrics={"review_threshold": 0.4},
    )
    repo = tmp_path / "models"
    promote(engine, store, repo, version.id, instance=InstanceKind.CPU)
    manifest = read_manifest(repo)
    assert (manifest.crop_size, len(manifest.classes), manifest.review_threshold) == (360, 12, 0.4)
    assert manifest.model_version_id == version.id


def test_a_worse_or_uncompared_candidate_is_refused_unless_forced(
    tmp_path: Path, sqlite_url: str
) -> None:
    engine = create_db_engine(DatabaseSettings(url=sqlite_url))
    store = LocalObjectStore(tmp_path / "store")
    repo = tmp_path / "models"
    served = _register(engine, store, "a")
    promote(engine, store, repo, served.id, instance=InstanceKind.CPU)  # nothing served before
    worse = _register(engine, store, "b", metrics=_compared(served, 0.5, accuracy=0.0))
    with pytest.raises(PromotionRefused, match=r"worse .* accuracy 0.000 against 0.850"):
        promote(engine, store, repo, worse.id, instance=InstanceKind.CPU)
    few = {**_compared(served, 0.5), "comparison": {**_compared(served, 0.5)["comparison"]}}
    few["comparison"]["cells"] = 9  # type: ignore[index]
    small = _register(engine, store, "c", metrics=few)
    with pytest.raises(PromotionRefused, match="on 9 held-out cells: at least 30"):
        promote(engine, store, repo, small.id, instance=InstanceKind.CPU)
    assert read_manifest(repo).model_version_id == served.id  # nothing written
    assert sorted(p.name for p in (repo / "stain_confidence").iterdir()) == ["1", "config.pbtxt"]

    done = promote(engine, store, repo, worse.id, instance=InstanceKind.CPU, force=True)
    assert "worse" in done.verdict and read_manifest(repo).model_version == "mtmd-tiny/2"
    better = _register(engine, store, "d", metrics=_compared(worse, 0.5))
    with pytest.raises(PromotionRefused, match=r"compared with mtmd-tiny/2\)|served mtmd-tiny/2"):
        promote(
            engine, store, repo, _register(engine, store, "e", metrics=_compared(served, 0.5)).id
        )
    assert "accuracy 0.900 against 0.850" in promote(engine, store, repo, better.id).verdict
    done = rollback(engine, store, repo, to="mtmd-tiny/1", instance=InstanceKind.CPU)
    assert (done.verdict, read_manifest(repo).model_version) == (
        "a rollback is not compared",
        "mtmd-tiny/1",
    )


def test_the_exported_demo_model_is_adopted_so_a_rollback_reaches_it(
    tmp_path: Path, sqlite_url: str
) -> None:
    engine = create_db_engine(DatabaseSettings(url=sqlite_url))
    store = LocalObjectStore(tmp_path / "store")
    repo = tmp_path / "models"
    export_checkpoint(DEMO / "checkpoint.pt", repo, instance=InstanceKind.CPU)
    assert read_manifest(repo).model_version == "mtmd-tiny/1"  # an unregistered export
    with pytest.raises(RegistryError, match="no earlier promoted version"):
        rollback(engine, store, repo)

    adopted = adopt_served(engine, store, repo, DEMO / "checkpoint.pt")
    assert (adopted.name, adopted.version, adopted.repository_version) == ("mtmd-tiny", 1, 1)
    assert adopt_served(engine, store, repo, DEMO / "checkpoint.pt").model_version_id == (
        adopted.model_version_id
    )  # once per checkpoint file
    demo = find_version(engine, "mtmd-tiny/1")
    assert demo.status is ModelStatus.PROMOTED and demo.metrics["accuracy"] > 0.8
    assert read_manifest(repo).calibrated_probabilities
    assert store.get(demo.checkpoint_key) == (DEMO / "checkpoint.pt").read_bytes()
    assert read_manifest(repo).registered_as == "mtmd-tiny/1"

    trained = _register(engine, store, "t", metrics=_compared(demo, 0.5, accuracy=0.0))
    assert f"{trained.name}/{trained.version}" == "mtmd-tiny/2"  # never the demo's name
    promote(engine, store, repo, trained.id, instance=InstanceKind.CPU, force=True)
    assert not read_manifest(repo).calibrated_probabilities  # its metrics fitted none
    done = rollback(engine, store, repo, instance=InstanceKind.CPU)
    assert (done.name, done.version, read_manifest(repo).model_version) == (
        "mtmd-tiny",
        1,
        "mtmd-tiny/1",
    )
    assert read_manifest(repo).calibrated_probabilities  # exported again with its calibration
    with pytest.raises(RegistryError, match="was not exported from"):
        adopt_served(engine, store, repo, ROOT / "training/transfer_model/checkpoint.pt")
    assert register_checkpoint(engine, store, DEMO / "checkpoint.pt").id == demo.id
