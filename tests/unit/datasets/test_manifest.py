"""The snapshot format: a content hash that ignores name and date, and tamper detection."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from stainless.core.storage.local import LocalObjectStore
from stainless.datasets.manifest import (
    CLASSES,
    DatasetError,
    DatasetItem,
    DatasetManifest,
    read_manifest,
    write_manifest,
)
from stainless.domain.cells import CellClass

ITEMS = (
    DatasetItem(id="c1", dic="crops/a_dic.png", bf="crops/a_bf.png", label="LY", source="review"),
    DatasetItem(id="c2", dic="crops/b_dic.png", label=None, source="prediction", slide_id="s1"),
)


def manifest(name: str = "ds", when: int = 1, **changes: object) -> DatasetManifest:
    fields: dict[str, object] = {
        "name": name,
        "created_at": datetime(2026, 1, when, tzinfo=UTC),
        "items": ITEMS,
        "description": f"made on day {when}",
    }
    fields.update(changes)
    return DatasetManifest.model_validate(fields)


def test_classes_follow_cell_class_order() -> None:
    assert tuple(c.value for c in CellClass) == CLASSES
    assert manifest().classes == CLASSES


def test_hash_ignores_name_date_and_description() -> None:
    one, two = manifest("a", 1), manifest("b", 2)
    assert one.content_hash == two.content_hash
    assert len(one.content_hash) == 64 and int(one.content_hash, 16) >= 0


def test_hash_changes_with_items_and_classes() -> None:
    base = manifest().content_hash
    relabelled = (ITEMS[0].model_copy(update={"label": "MO"}), ITEMS[1])
    assert manifest(items=relabelled).content_hash != base
    assert manifest(items=ITEMS[:1]).content_hash != base
    assert manifest(classes=tuple(reversed(CLASSES))).content_hash != base


def test_hash_is_stable_across_releases() -> None:
    # the canonical form is a contract: this value may only change with the manifest version
    item = DatasetItem(id="x", dic="d.png", source="phantom")
    pinned = manifest(items=(item,))
    expected = hashlib.sha256(
        json.dumps(
            {
                "classes": list(CLASSES),
                "items": [
                    {
                        "bf": None,
                        "dic": "d.png",
                        "id": "x",
                        "label": None,
                        "mask": None,
                        "slide_id": None,
                        "source": "phantom",
                    }
                ],
            },
            sort_keys=True,
            separators=(",", ":"),
        ).encode()
    ).hexdigest()
    assert pinned.content_hash == expected


def test_write_then_read_round_trips(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    original = manifest()
    key = write_manifest(store, original)
    assert key == f"datasets/ds/{original.content_hash}.json"
    assert read_manifest(store, key) == original


def test_tampered_snapshot_is_refused(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    key = write_manifest(store, manifest())
    data = json.loads(store.get(key))
    data["items"][0]["label"] = "BA"
    store.put(key, json.dumps(data).encode())
    with pytest.raises(DatasetError, match="does not match its hash"):
        read_manifest(store, key)


def test_name_or_date_edits_keep_the_hash_valid(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    key = write_manifest(store, manifest())
    data = json.loads(store.get(key))
    data["description"] = "edited"
    store.put(key, json.dumps(data).encode())
    assert read_manifest(store, key).description == "edited"


def test_missing_empty_and_malformed_snapshots(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    missing = f"datasets/ds/{'0' * 64}.json"
    with pytest.raises(DatasetError, match="no snapshot under"):
        read_manifest(store, missing)
    data = manifest().model_dump(mode="json")
    data["items"] = []
    store.put(missing, json.dumps(data).encode())
    with pytest.raises(DatasetError, match="has no items"):
        read_manifest(store, missing)
    store.put(missing, b"{not json")
    with pytest.raises(DatasetError, match="not JSON"):
        read_manifest(store, missing)
    with pytest.raises(DatasetError, match="not a snapshot key"):
        read_manifest(store, "datasets/ds/abc.json")
    with pytest.raises(DatasetError, match="no items"):
        write_manifest(store, manifest(items=()))


def test_items_are_validated() -> None:
    with pytest.raises(ValidationError, match="not a cell class"):
        DatasetItem(id="a", dic="d.png", label="XX", source="review")
    with pytest.raises(ValidationError, match="outside A-Za-z"):
        DatasetItem(id="a", dic="../etc/passwd x", source="review")
    with pytest.raises(ValidationError, match="appears twice"):
        manifest(items=(ITEMS[0], ITEMS[0]))
    with pytest.raises(ValidationError, match="invalid dataset name"):
        manifest(name="../x")
    with pytest.raises(ValidationError):
        ITEMS[0].label = "MO"  # type: ignore[misc]
