"""A training job evaluates model 3 on its snapshot's held-out cells, as it does models 1
and 2, and the served version on the same cells: promotion can judge a model-3 candidate."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from stainless.core.config import StoreSettings
from stainless.core.db.models import ModelVersion
from stainless.core.storage.local import LocalObjectStore
from stainless.datasets.importers import import_phantom
from stainless.datasets.phantom import write_phantom_set
from stainless.imaging.phantom_set import phantom_config
from stainless.ml.models.paired import build_paired_discriminator, build_paired_generator
from stainless_training.config import dump_config
from stainless_training.jobs import evaluate_checkpoint, job_config
from stainless_training.paired import model_config
from stainless_training.settings import TrainingSettings


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    phantom, root = tmp_path_factory.mktemp("phantom"), tmp_path_factory.mktemp("store")
    write_phantom_set(
        LocalObjectStore(phantom),
        slides=1,
        fields=12,
        seed=4,
        config=phantom_config(width=512, height=512, acquisition={"wbc_per_field": [4, 6]}),
    )
    key = import_phantom(phantom, LocalObjectStore(root), name="job").key
    assert key is not None
    return root, key


def test_model_3_is_evaluated_and_compared_on_the_held_out_cells(
    snapshot: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, key = snapshot

    def no_backbones(*_: object) -> None:
        raise AssertionError("model 3 is judged without LPIPS and FID backbones")

    monkeypatch.setattr("stainless_training.backbones.quality_metrics", no_backbones)
    settings = TrainingSettings(store=StoreSettings(root=root))
    config = job_config({"size": "tiny"}, model="paired", dataset_key=key)
    net = model_config(config)
    torch.manual_seed(0)
    weights = {
        "generator": build_paired_generator(net).state_dict(),
        "critic": build_paired_discriminator(net).state_dict(),
    }
    checkpoint = tmp_path / "checkpoint.pt"
    torch.save(weights, checkpoint)
    store = LocalObjectStore(root)  # the served version: the same weights, stored by a job
    store.put("models/paired/a/checkpoint.pt", checkpoint.read_bytes())
    store.put("models/paired/a/config.yaml", dump_config(config).encode())
    served = ModelVersion(
        id="v1",
        name="paired-tiny",
        version=1,
        kind="paired",
        checkpoint_key="models/paired/a/checkpoint.pt",
    )

    metrics = evaluate_checkpoint(settings, config, checkpoint, served)
    assert metrics["model"] == "paired" and metrics["cells"] >= 3
    assert len(metrics["per_class"]) == len(metrics["class_names"]) == 7
    assert sum(map(sum, metrics["confusion"])) == metrics["cells"]
    assert 0 <= metrics["accuracy"] <= 1 and -1 <= metrics["ssim"] <= 1
    compared = metrics["comparison"]  # the same weights on the same cells: the same figures
    assert compared == {
        "model_version_id": "v1",
        "model": "paired-tiny/1",
        "cells": metrics["cells"],
        "accuracy": metrics["accuracy"],
        "ssim": pytest.approx(metrics["ssim"], abs=1e-6),
    }
