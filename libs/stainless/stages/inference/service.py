"""The inference consumer process (``cells.cropped`` → ``cells.stained``)."""

from __future__ import annotations

import threading
from pathlib import Path

from stainless.core.config import Settings
from stainless.core.db.engine import create_db_engine, ping, wait_for_database
from stainless.core.events import ALL_TOPICS, create_bus
from stainless.core.inference import create_inference
from stainless.core.inference.manifest import read_manifest
from stainless.core.observability import HealthServer, create_health_app
from stainless.core.runners import Service
from stainless.core.storage import create_store
from stainless.stages.inference.stage import CellStainer, inference_consumer

__all__ = ["build"]


def build(settings: Settings, stop: threading.Event) -> Service:
    """The consumer, its inference port, its stainer and its health server."""
    engine = create_db_engine(settings.database)
    wait_for_database(engine)
    bus = create_bus(settings.bus, client_id="stainless-inference")
    bus.ensure_topics(ALL_TOPICS)
    inference = create_inference(settings.inference)
    repository = Path(settings.inference.model_repository)
    stainer = CellStainer(
        store=create_store(settings.store),
        inference=inference,
        settings=settings.inference,
        stop=stop,
        repository=lambda: read_manifest(repository),
    )
    consumer = inference_consumer(bus, engine, stainer)
    health = HealthServer(
        create_health_app(lambda: ping(engine) and inference.ready(), title="stainless-inference"),
        port=settings.inference.http_port,
    )

    def close() -> None:
        consumer.close()
        inference.close()
        bus.close()

    return Service(
        name="stainless-inference",
        loop=consumer,
        health=health,
        close=close,
        details={
            "backend": settings.inference.backend.value,
            "model_version": stainer.model_version,
        },
    )
