"""The review page in real headless Chromium: reclassify by keyboard, sign, check API and FHIR."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect, sync_playwright

from stainless.core.config import (
    DatabaseSettings,
    InferenceSettings,
    Settings,
    StoreSettings,
)
from stainless.core.db.engine import create_db_engine, session_scope
from stainless.core.http.auth import Role, create_key
from stainless.core.observability import HealthServer
from stainless.core.storage import create_store
from stainless.demo import run_demo
from stainless.stages.review.api import create_app

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


@pytest.fixture
def served(tmp_path: Path, unused_port: int) -> Iterator[Served]:
    root = tmp_path
    settings = Settings(
        database=DatabaseSettings(url=f"sqlite:///{root / 'stainless.db'}"),
        store=StoreSettings(root=root / "store"),
        # Every cell goes to the review queue, so the page has work to show.
        inference=InferenceSettings(model_repository=str(root / "models"), review_threshold=1e3),
    )
    _, slide_id = run_demo(settings, out=root / "demo", fields=3, seed=7, checkpoint=CHECKPOINT)
    engine = create_db_engine(settings.database)
    with session_scope(engine) as session:
        _, key = create_key(session, name="rita", role=Role.REVIEWER, days=1)
    app = create_app(
        settings.results, settings.clinical, engine=engine, store=create_store(settings.store)
    )
    server = HealthServer(app, host="127.0.0.1", port=unused_port)
    server.start()
    url = f"http://127.0.0.1:{unused_port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            httpx.get(f"{url}/health/live", timeout=1).raise_for_status()
            break
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    yield Served(url, slide_id, root, key)
    server.stop()


@pytest.fixture
def page(served: Served) -> Iterator[Page]:
    assert CHROMIUM.is_file(), "Debian chromium is missing: `make browser` installs it"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        yield context.new_page()
        browser.close()


def _api(served: Served, path: str) -> httpx.Response:
    return httpx.get(served.url + path, headers={"X-API-Key": served.key}, timeout=10)


def test_a_reviewer_reclassifies_by_keyboard_and_signs(served: Served, page: Page) -> None:
    page.goto(f"{served.url}/slides/{served.slide_id}")
    page.get_by_test_id("api-key").fill(served.key)
    page.get_by_test_id("api-key-save").click()
    page.wait_for_selector("body[data-ready='true']")
    page.wait_for_selector("[data-testid='queue-cell']")
    queue = page.get_by_test_id("queue-cell")
    cells = queue.count()
    assert cells >= 2
    first = queue.first.get_attribute("data-cell-id")
    predicted = queue.first.get_attribute("data-class")
    target, key = ("EO", "3") if predicted != "EO" else ("MO", "5")
    page.screenshot(path=str(served.out / "review-page.png"), full_page=True)

    page.keyboard.press(key)  # reclassify the selected (first) cell
    for _ in range(cells - 1):
        page.keyboard.press("c")  # confirm every other cell
    page.wait_for_selector("[data-testid='queue-empty']")
    page.wait_for_selector("body:not([data-busy='true'])")
    page.get_by_test_id("sign").click()
    expect(page.get_by_test_id("slide-status")).to_contain_text("signed")  # no eval: CSP
    assert page.get_by_test_id(f"diff-{target}").get_attribute("data-count") != "0"
    stored = page.evaluate_handle("() => [sessionStorage.length, localStorage.length]")
    assert stored.json_value() == [1, 0]  # the key lives only as long as the tab
    page.get_by_test_id("api-key-clear").click()
    expect(page.get_by_test_id("whoami")).to_have_text("no valid key")
    assert page.evaluate_handle("() => sessionStorage.length").json_value() == 0

    cell = _api(served, f"/v1/cells/{first}").json()
    assert cell["class"] == target and cell["review_status"] == "reclassified"
    slide = _api(served, f"/v1/slides/{served.slide_id}").json()
    assert slide["status"] == "signed" and slide["signed_by"] == "rita"
    assert slide["differential"]["counts"][target] >= 1
    report = _api(served, f"/v1/slides/{served.slide_id}/fhir").json()
    assert report["resourceType"] == "DiagnosticReport" and report["status"] == "final"
    observation = next(o for o in report["contained"] if o["id"] == f"obs-{target}")
    counts = [c["valueQuantity"]["value"] for c in observation["component"]]
    assert counts[0] >= 1
