"""Shared by the browser tests: a demo slide served by the results app, and real Chromium."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, sync_playwright
from sqlalchemy import Engine

from stainless.core.config import (
    DatabaseSettings,
    InferenceSettings,
    ResultsSettings,
    Settings,
    StoreSettings,
)
from stainless.core.db.engine import create_db_engine, session_scope
from stainless.core.http.auth import Role, create_key
from stainless.core.observability import HealthServer
from stainless.core.storage import create_store
from stainless.demo import run_demo
from stainless.stages.review.api import create_app

from ..support.oidc_provider import CLIENT_ID, Provider

CHECKPOINT = Path(__file__).parents[2] / "training/demo_model/checkpoint.pt"
CHROMIUM = Path("/usr/bin/chromium")
# Flags keep Chromium off the (closed) network at start.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass(frozen=True)
class Served:
    url: str
    slide_id: str
    out: Path
    key: str  # a reviewer's (stainless keys create rita --role reviewer)
    engine: Engine


@contextmanager
def _serving(
    root: Path, port: int, results: ResultsSettings, *, fields: int = 3
) -> Iterator[Served]:
    """A demo slide of ``fields`` fields and the results app over it on ``port``."""
    settings = Settings(
        database=DatabaseSettings(url=f"sqlite:///{root / 'stainless.db'}"),
        store=StoreSettings(root=root / "store"),
        # Every cell goes to the review queue, so the page has work to show.
        inference=InferenceSettings(model_repository=str(root / "models"), review_threshold=1e3),
        results=results,
    )
    _, slide_id = run_demo(
        settings, out=root / "demo", fields=fields, seed=7, checkpoint=CHECKPOINT
    )
    engine = create_db_engine(settings.database)
    with session_scope(engine) as session:
        _, key = create_key(session, name="rita", role=Role.REVIEWER, days=1)
    app = create_app(
        settings.results, settings.clinical, engine=engine, store=create_store(settings.store)
    )
    server = HealthServer(app, host="127.0.0.1", port=port)
    server.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            httpx.get(f"{url}/health/live", timeout=1).raise_for_status()
            break
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    yield Served(url, slide_id, root, key, engine)
    server.stop()


@pytest.fixture
def served(tmp_path: Path, unused_port: int) -> Iterator[Served]:
    with _serving(tmp_path, unused_port, ResultsSettings()) as served:
        yield served


@pytest.fixture
def served_larger(tmp_path: Path, unused_port: int) -> Iterator[Served]:
    """A slide of ten fields: cells of several classes for a study."""
    with _serving(tmp_path, unused_port, ResultsSettings(), fields=10) as served:
        yield served


@pytest.fixture
def served_with_oidc(tmp_path: Path, unused_port: int, oidc_provider: Provider) -> Iterator[Served]:
    results = ResultsSettings(oidc_issuer=oidc_provider.issuer, oidc_client_id=CLIENT_ID)
    with _serving(tmp_path, unused_port, results) as served:
        yield served


@pytest.fixture
def page() -> Iterator[Page]:
    assert CHROMIUM.is_file(), "Debian chromium is missing: `make browser` installs it"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        yield context.new_page()
        browser.close()
