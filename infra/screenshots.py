"""Screenshots for the README: the review page and report.html of a demo slide.

Usage: ``.venv/bin/python infra/screenshots.py [DOCS_DIR]`` (needs Debian chromium).
Runs the demo into a temporary folder with every cell sent to review, serves the
results API there without a key, and photographs both pages with Playwright.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import httpx
from playwright.sync_api import sync_playwright

from stainless.core.config import (
    DatabaseSettings,
    InferenceSettings,
    ResultsSettings,
    Settings,
    StoreSettings,
)
from stainless.core.db.engine import create_db_engine
from stainless.core.observability import HealthServer
from stainless.core.storage import create_store
from stainless.demo import run_demo
from stainless.stages.review.api import create_app

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


def main(docs: Path, port: int = 8093) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        settings = Settings(
            database=DatabaseSettings(url=f"sqlite:///{root / 'stainless.db'}"),
            store=StoreSettings(root=root / "store"),
            inference=InferenceSettings(model_repository=str(root / "models")),
            results=ResultsSettings(anonymous_role="admin"),
        )
        checkpoint = ROOT / "training/demo_model/checkpoint.pt"
        _, slide = run_demo(settings, out=root / "demo", fields=8, seed=3, checkpoint=checkpoint)
        app = create_app(
            settings.results,
            settings.clinical,
            engine=create_db_engine(settings.database),
            store=create_store(settings.store),
        )
        server = HealthServer(app, host="127.0.0.1", port=port)
        server.start()
        for _ in range(100):
            try:
                httpx.get(f"http://127.0.0.1:{port}/health/live", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"http://127.0.0.1:{port}/slides/{slide}")
            page.wait_for_selector("body[data-ready='true']")
            page.wait_for_timeout(1500)  # the gallery's images
            page.screenshot(path=str(docs / "review-page.png"), full_page=True)
            page.goto((root / "demo" / "report.html").as_uri())
            page.screenshot(path=str(docs / "demo-report.png"), full_page=True)
            browser.close()
        server.stop()


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs")
