"""Cells with crops in a migrated SQLite database and a local store; tiny crop folders."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine

from stainless.core.config import DatabaseSettings
from stainless.core.db.engine import create_db_engine, session_scope
from stainless.core.db.models import Cell, Prediction, Review, utcnow
from stainless.core.db.repository import create_slide, get_or_create_scanner
from stainless.core.storage.local import LocalObjectStore
from stainless.domain.review import ReviewAction
from stainless.imaging.codecs import encode_png


@dataclass(frozen=True)
class Spec:
    """A cell: its predictions (oldest first), its reviews (oldest first), its crops."""

    predicted: tuple[str, ...] = ("SNE",)
    reviews: tuple[tuple[str, str | None], ...] = ()  # (action, new_class)
    bf: bool = True
    dic_stored: bool = True


@dataclass
class World:
    engine: Engine
    store: LocalObjectStore
    slides: list[str] = field(default_factory=list)
    cells: list[str] = field(default_factory=list)


def dic_crop(seed: int, size: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 30000, (size, size), dtype=np.uint16)


def bf_crop(seed: int, size: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def build_world(engine: Engine, store: LocalObjectStore, slides: list[list[Spec]]) -> World:
    world = World(engine, store)
    base = utcnow()
    with session_scope(engine) as session:
        scanner = get_or_create_scanner(session, name="ds", key_prefix="k", key_hash="h")
        for s, specs in enumerate(slides):
            slide = create_slide(
                session, scanner_id=scanner.id, external_id=f"S{s}", patient_pseudonym="P"
            )
            world.slides.append(slide.id)
            for i, spec in enumerate(specs):
                dic_key = f"crops/{slide.id}/{i}_dic.png"
                bf_key = f"crops/{slide.id}/{i}_bf.png" if spec.bf else None
                if spec.dic_stored:
                    store.put(dic_key, encode_png(dic_crop(i)), content_type="image/png")
                if bf_key:
                    store.put(bf_key, encode_png(bf_crop(i)), content_type="image/png")
                cell = Cell(
                    slide_id=slide.id,
                    field_index=i // 2,
                    index=i % 2,
                    x0=0,
                    y0=0,
                    x1=8,
                    y1=8,
                    dic_crop_key=dic_key,
                    bf_crop_key=bf_key,
                )
                session.add(cell)
                session.flush()
                world.cells.append(cell.id)
                predictions = []
                for p, code in enumerate(spec.predicted):
                    prediction = Prediction(
                        cell_id=cell.id,
                        model_version=f"m{p}",
                        predicted_class=code,
                        created_at=base + timedelta(seconds=p),
                    )
                    session.add(prediction)
                    predictions.append(prediction)
                session.flush()
                for r, (action, new_class) in enumerate(spec.reviews):
                    session.add(
                        Review(
                            cell_id=cell.id,
                            prediction_id=predictions[-1].id if predictions else None,
                            reviewer="rita",
                            action=ReviewAction(action),
                            new_class=new_class,
                            created_at=base + timedelta(seconds=10 + r),
                        )
                    )
    return world


@pytest.fixture
def store(tmp_path: Path) -> LocalObjectStore:
    return LocalObjectStore(tmp_path / "store")


@pytest.fixture
def engine(sqlite_url: str) -> Engine:
    return create_db_engine(DatabaseSettings(url=sqlite_url))


@pytest.fixture
def world(engine: Engine, store: LocalObjectStore) -> Callable[[list[list[Spec]]], World]:
    return lambda slides: build_world(engine, store, slides)
