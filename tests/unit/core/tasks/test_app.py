from __future__ import annotations

import json
from pathlib import Path

import pytest

from stainless.core.config import Settings, StoreSettings
from stainless.core.storage import InvalidKeyError
from stainless.core.storage.local import LocalObjectStore
from stainless.core.tasks import create_celery
from stainless.datasets.phantom import register_phantom_task


def test_eager_task_writes_the_slide_into_the_store(tmp_path: Path) -> None:
    settings = Settings(store=StoreSettings(root=tmp_path / "store"))
    app = create_celery(settings.tasks)
    assert app.conf.task_always_eager is True
    entry = (
        register_phantom_task(app, settings.store)
        .delay(prefix="raw/t", slide_index=1, fields=1, seed=5, width=320, height=256)
        .get()
    )
    store = LocalObjectStore(tmp_path / "store")
    assert json.loads(store.get("raw/t/slide_001/slide.json")) == entry
    assert entry["fields"][0]["dic"] == "raw/t/slide_001/field_000_dic.tif"
    assert store.get("raw/t/slide_001/phantom.png").startswith(b"\x89PNG")


def test_eager_task_propagates_errors(tmp_path: Path) -> None:
    settings = Settings(store=StoreSettings(root=tmp_path / "store"))
    task = register_phantom_task(create_celery(settings.tasks), settings.store)
    with pytest.raises(InvalidKeyError):
        task.delay(prefix="a/../b", slide_index=0, fields=1, seed=0).get()
    with pytest.raises(ValueError, match="at least one field"):
        task.delay(prefix="ok", slide_index=0, fields=0, seed=0).get()
    assert list(LocalObjectStore(tmp_path / "store").list()) == []
