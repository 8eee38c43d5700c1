"""A training job compares its model with the served version on the same held-out cells; a
served version whose files are gone is reported, not fatal."""

from __future__ import annotations

from pathlib import Path

from stainless.core.db.models import ModelVersion
from stainless.core.storage.local import LocalObjectStore
from stainless_training.jobs import _compare


def test_the_served_version_is_evaluated_from_its_stored_files(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    store.put("models/mtmd/a/checkpoint.pt", b"weights")
    store.put(
        "models/mtmd/a/config.yaml",
        (Path(__file__).parents[3] / "training/demo_model/config.yaml").read_bytes(),
    )
    served = ModelVersion(
        id="v1",
        name="mtmd-tiny",
        version=1,
        kind="mtmd",
        checkpoint_key="models/mtmd/a/checkpoint.pt",
    )
    seen: list[bytes] = []

    def evaluated(config, checkpoint: Path) -> dict[str, object]:  # type: ignore[no-untyped-def]
        seen.append(checkpoint.read_bytes())
        assert config.model.value == "mtmd"
        return {"cells": 40, "accuracy": 0.8, "ssim": 0.7, "mse": 0.01}

    assert _compare(store, served, evaluated) == {
        "model_version_id": "v1",
        "model": "mtmd-tiny/1",
        "cells": 40,
        "accuracy": 0.8,
        "ssim": 0.7,
    }
    assert seen == [b"weights"]

    gone = ModelVersion(
        id="v2",
        name="mtmd-tiny",
        version=2,
        kind="mtmd",
        checkpoint_key="models/mtmd/gone/checkpoint.pt",
    )
    compared = _compare(store, gone, evaluated)
    assert (compared["cells"], compared["model"]) == (0, "mtmd-tiny/2")
    assert "not evaluated: no object under key 'models/mtmd/gone/checkpoint.pt'" in compared["note"]
    assert len(seen) == 1
