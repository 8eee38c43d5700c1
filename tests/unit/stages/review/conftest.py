"""Slides, cells, predictions and crops written straight to SQLite and a local store."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, select

from stainless.core.config import DatabaseSettings, ResultsSettings, Settings, StoreSettings, part
from stainless.core.db.engine import create_db_engine, session_scope
from stainless.core.db.models import (
    ApiKey,
    Cell,
    OutboxEvent,
    Prediction,
    Review,
    Slide,
    SlideStatus,
    utcnow,
)
from stainless.core.db.repository import create_slide, get_or_create_scanner
from stainless.core.http.auth import KEY_KIND, Role
from stainless.core.keys import key_digest, lookup_of
from stainless.core.storage.local import LocalObjectStore
from stainless.domain.review import ReviewStatus
from stainless.imaging.codecs import encode_png
from stainless.stages.review.api import create_app
from stainless_results.main import ResultsServiceSettings
from stainless_results.main import build as results_app

REVIEWER_KEY = "srk_00000001_rev-key-1"
SCIENTIST_KEY = "srk_00000002_sci-key-2"
ADMIN_KEY = "srk_00000003_adm_key_3"
KEYS = {
    "rita": (Role.REVIEWER, REVIEWER_KEY),
    "sam": (Role.SCIENTIST, SCIENTIST_KEY),
    "ada": (Role.ADMIN, ADMIN_KEY),
}
REVIEWER = {"X-API-Key": REVIEWER_KEY}
SCIENTIST = {"X-API-Key": SCIENTIST_KEY}
ADMIN = {"X-API-Key": ADMIN_KEY}


def install_keys(engine: Engine, days: float = 1.0) -> None:
    """The keys above as ``stainless keys create`` would store them (their hashes only)."""
    with session_scope(engine) as session:
        for name, (role, key) in KEYS.items():
            session.add(
                ApiKey(
                    name=name,
                    role=role.value,
                    key_prefix=lookup_of(key, KEY_KIND) or "",
                    key_hash=key_digest(key),
                    expires_at=utcnow() + timedelta(days=days),
                )
            )


@dataclass(frozen=True)
class CellSpec:
    """A cell to build: its predicted class (None = pending) and the pipeline's review status."""

    predicted: str | None
    status: ReviewStatus = ReviewStatus.CONFIRMED
    confidence: float = 0.9
    bf: bool = False
    truth: str | None = None  # the phantom's ground truth


@dataclass
class Built:
    slide_id: str
    cell_ids: list[str] = field(default_factory=list)


@dataclass
class World:
    engine: Engine
    store: LocalObjectStore
    settings: Settings
    scanner_id: str

    def slide(
        self,
        cells: Sequence[CellSpec],
        *,
        status: SlideStatus = SlideStatus.COMPLETED,
        external_id: str | None = None,
    ) -> Built:
        with session_scope(self.engine) as session:
            slide = create_slide(
                session,
                scanner_id=self.scanner_id,
                external_id=external_id or f"S-{utcnow().timestamp()}",
                patient_pseudonym="P-042",
            )
            slide.status = status
            built = Built(slide.id)
            for i, spec in enumerate(cells):
                built.cell_ids.append(self._cell(session, slide.id, i, spec))
        return built

    def _cell(self, session: Session, slide_id: str, index: int, spec: CellSpec) -> str:
        rng = np.random.default_rng(index)
        cell = Cell(slide_id=slide_id, field_index=0, index=index, x0=0, y0=0, x1=32, y1=32)
        cell.true_class = spec.truth
        cell.dic_crop_key = f"crops/{slide_id}/{index}/dic.png"
        self.store.put(
            cell.dic_crop_key, encode_png(rng.integers(9000, 12000, (32, 32), np.uint16))
        )
        if spec.bf:
            cell.bf_crop_key = f"crops/{slide_id}/{index}/bf.png"
            self.store.put(
                cell.bf_crop_key, encode_png(rng.integers(0, 255, (32, 32, 3), np.uint8))
            )
        session.add(cell)
        session.flush()
        if spec.predicted is not None:
            prediction = Prediction(
                cell_id=cell.id,
                model_version="m1",
                predicted_class=spec.predicted,
                probabilities={spec.predicted: spec.confidence},
                stain_key=f"stained/{slide_id}/{index}.png",
                heatmap_key=f"heatmaps/{slide_id}/{index}.png",
                confidence=spec.confidence,
                confidence_variant="whole-latent",
                uncertainty=1 - spec.confidence,
                review_status=spec.status,
                review_reasons=["low-delta"] if spec.status is ReviewStatus.NEEDS_REVIEW else [],
                created_at=utcnow() - timedelta(minutes=5),
            )
            self.store.put(
                prediction.stain_key or "", encode_png(rng.integers(0, 255, (32, 32, 3), np.uint8))
            )
            self.store.put(
                prediction.heatmap_key or "", encode_png(rng.integers(0, 255, (32, 32), np.uint8))
            )
            session.add(prediction)
        return cell.id

    def snapshot(self) -> tuple[object, ...]:
        """Everything a refused request must leave unchanged."""
        with Session(self.engine) as session:
            reviews = len(session.exec(select(Review)).all())
            events = len(session.exec(select(OutboxEvent)).all())
            statuses = sorted(
                (p.cell_id, str(p.review_status)) for p in session.exec(select(Prediction))
            )
            slides = sorted((s.id, str(s.status), s.signed_by) for s in session.exec(select(Slide)))
        return reviews, events, tuple(statuses), tuple(slides)

    def events(self, topic: str) -> list[OutboxEvent]:
        with Session(self.engine) as session:
            return list(session.exec(select(OutboxEvent).where(OutboxEvent.topic == topic)).all())


def make_settings(sqlite_url: str, root: Path, **results: object) -> Settings:
    return Settings(
        database=DatabaseSettings(url=sqlite_url),
        store=StoreSettings(root=root),
        results=ResultsSettings(**results),  # type: ignore[arg-type]
    )


@pytest.fixture
def world(sqlite_url: str, tmp_path: Path) -> World:
    settings = make_settings(sqlite_url, tmp_path / "store")
    engine = create_db_engine(settings.database)
    install_keys(engine)
    with session_scope(engine) as session:
        scanner = get_or_create_scanner(session, name="scanner", key_prefix="p", key_hash="h")
    return World(engine, LocalObjectStore(tmp_path / "store"), settings, scanner.id)


@pytest.fixture
def client(world: World) -> TestClient:
    return TestClient(results_app(part(world.settings, ResultsServiceSettings)))


@pytest.fixture
def client_for(world: World) -> Callable[..., TestClient]:
    """A client of the results API with other results settings (e.g. the embedded demo's
    anonymous role, which the service itself refuses)."""

    def build(**results: object) -> TestClient:
        block = world.settings.results.model_copy(update=results)
        app = create_app(block, world.settings.clinical, engine=world.engine, store=world.store)
        return TestClient(app)

    return build
