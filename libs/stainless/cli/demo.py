"""The demo: one phantom slide through what exists of the pipeline, on embedded defaults.

Steps: migrate the database; render a phantom slide through the task queue into
the object store; record the scanner, the slide and every field with their
``fields.ingested`` events in one transaction (outbox); relay the events onto
the bus; write ``summary.json`` and ``phantom.png``.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy.engine import make_url

from stainless.config import Settings
from stainless.db.engine import create_db_engine, session_scope
from stainless.db.migrate import upgrade
from stainless.db.models import Modality
from stainless.db.repository import create_slide, get_or_create_scanner, record_field
from stainless.events import ALL_TOPICS, create_bus
from stainless.events.outbox import OutboxRelay
from stainless.storage import ObjectStore, create_store
from stainless.tasks import create_celery
from stainless.tasks.app import PHANTOM_TASK

log = structlog.get_logger(__name__)

DEMO_SCANNER = "demo-scanner"


def _sha256(store: ObjectStore, key: str) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    for chunk in store.stream(key):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def run_demo(settings: Settings, *, out: Path, fields: int, seed: int) -> Path:
    """Run the demo and return the path of ``summary.json``."""
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    upgrade(settings.database.url)
    engine = create_db_engine(settings.database)
    store = create_store(settings.store)
    bus = create_bus(settings.bus, client_id="stainless-demo")
    bus.ensure_topics(ALL_TOPICS)
    celery = create_celery(settings)

    run_id = f"demo-{seed}-{uuid.uuid4().hex[:8]}"
    prefix = f"raw/{run_id}"
    entry: dict[str, Any] = (
        celery.tasks[PHANTOM_TASK]
        .delay(prefix=prefix, slide_index=0, fields=fields, seed=seed)
        .get(timeout=settings.tasks.task_time_limit_s)
    )

    with session_scope(engine) as session:
        scanner = get_or_create_scanner(
            session, name=DEMO_SCANNER, key_prefix="demo", key_hash="(no key: embedded demo)"
        )
        slide = create_slide(
            session,
            scanner_id=scanner.id,
            external_id=run_id,
            patient_pseudonym="phantom",
            acquisition={"seed": seed},
        )
        for field in entry["fields"]:
            for modality, key in ((Modality.DIC, field["dic"]), (Modality.BF, field["bf"])):
                sha256, size = _sha256(store, key)
                record_field(
                    session,
                    slide_id=slide.id,
                    index=field["index"],
                    modality=modality,
                    object_key=key,
                    sha256=sha256,
                    size_bytes=size,
                    width=field["width"],
                    height=field["height"],
                )
        slide_id = slide.id
    published = OutboxRelay(engine, bus).drain()

    (out / "phantom.png").write_bytes(store.get(f"{prefix}/slide_000/phantom.png"))
    classes = Counter(cell["class"] for field in entry["fields"] for cell in field["cells"])
    summary = {
        "slide_id": slide_id,
        "external_id": run_id,
        "fields": len(entry["fields"]),
        "images_stored": 2 * len(entry["fields"]),
        "white_cells_ground_truth": sum(classes.values()),
        "ground_truth_classes": dict(sorted(classes.items())),
        "events_published": published,
        "database": make_url(settings.database.url).get_backend_name(),
        "store": settings.store.backend.value,
        "bus": settings.bus.backend.value,
        "tasks": "eager" if settings.tasks.eager else "celery",
        "elapsed_s": round(time.perf_counter() - started, 2),
    }
    path = out / "summary.json"
    path.write_text(json.dumps(summary, indent=2) + "\n")
    bus.close()
    engine.dispose()
    log.info("demo finished", **summary)
    return path
