"""A dataset snapshot from Postgres and the S3 server, read back with its hash verified."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta

import numpy as np
import pytest

from stainless.core.config import DatabaseSettings, StoreBackend, StoreSettings
from stainless.core.db.engine import create_db_engine, session_scope
from stainless.core.db.migrate import upgrade
from stainless.core.db.models import Cell, Prediction, Review, utcnow
from stainless.core.db.repository import create_slide, get_or_create_scanner
from stainless.core.storage import create_store
from stainless.core.storage.s3 import S3ObjectStore
from stainless.datasets.manifest import DatasetError, read_manifest
from stainless.datasets.snapshot import SkippedCell, build_snapshot
from stainless.datasets.torch_data import ManifestDataset
from stainless.domain.review import ReviewAction
from stainless.imaging.codecs import encode_png

pytestmark = pytest.mark.integration


def test_snapshot_on_postgres_and_s3(
    new_postgres_database: Callable[[], str], s3_endpoint: str
) -> None:
    url = new_postgres_database()
    upgrade(url)
    engine = create_db_engine(DatabaseSettings(url=url))
    store = create_store(
        StoreSettings(backend=StoreBackend.S3, endpoint=s3_endpoint, bucket="t-datasets")
    )
    assert isinstance(store, S3ObjectStore)
    base = utcnow()
    # (predicted, review action, new class, brightfield stored)
    specs = [
        ("SNE", "confirm", None, True),
        ("SNE", "reclassify", "MO", True),
        ("LY", "poor_quality", None, True),
        ("EO", None, None, True),
        ("BA", "confirm", None, False),  # brightfield key recorded, object missing
    ]
    ids = []
    with session_scope(engine) as session:
        scanner = get_or_create_scanner(session, name="pg-ds", key_prefix="k", key_hash="h")
        slide = create_slide(
            session, scanner_id=scanner.id, external_id="DS-1", patient_pseudonym="P"
        )
        for i, (predicted, action, new_class, bf_stored) in enumerate(specs):
            dic_key, bf_key = f"crops/{slide.id}/{i}_dic.png", f"crops/{slide.id}/{i}_bf.png"
            store.put(dic_key, encode_png(np.full((32, 32), 1000 * i, np.uint16)))
            if bf_stored:
                store.put(bf_key, encode_png(np.full((32, 32, 3), 10 * i, np.uint8)))
            cell = Cell(
                slide_id=slide.id,
                field_index=0,
                index=i,
                x0=0,
                y0=0,
                x1=8,
                y1=8,
                dic_crop_key=dic_key,
                bf_crop_key=bf_key,
            )
            session.add(cell)
            session.flush()
            ids.append(cell.id)
            prediction = Prediction(cell_id=cell.id, model_version="m1", predicted_class=predicted)
            session.add(prediction)
            session.flush()
            if action is not None:
                session.add(
                    Review(
                        cell_id=cell.id,
                        prediction_id=prediction.id,
                        reviewer="rita",
                        action=ReviewAction(action),
                        new_class=new_class,
                        created_at=base + timedelta(seconds=1),
                    )
                )

    skipped: list[SkippedCell] = []
    key, manifest = build_snapshot(
        engine, store, name="pg", include_unreviewed=True, on_skip=skipped.append
    )
    assert [(i.id, i.label, i.source) for i in manifest.items] == [
        (ids[0], "SNE", "review"),
        (ids[1], "MO", "review"),
        (ids[3], "EO", "prediction"),
    ]
    assert [s.cell_id for s in skipped] == [ids[4]]
    assert key == f"datasets/pg/{manifest.content_hash}.json"
    assert read_manifest(store, key) == manifest
    again, _ = build_snapshot(engine, store, name="pg", include_unreviewed=True)
    assert again == key

    dataset = ManifestDataset(store, manifest, image_size=16)
    assert dataset.labels == [manifest.classes.index(c) for c in ("SNE", "MO", "EO")]
    assert bool(dataset[1]["has_pair"]) and dataset[1]["bf"].shape == (3, 16, 16)

    data = json.loads(store.get(key))
    data["items"][0]["label"] = "BA"
    store.put(key, json.dumps(data).encode(), content_type="application/json")
    with pytest.raises(DatasetError, match="does not match its hash"):
        read_manifest(store, key)
