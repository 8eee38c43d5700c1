"""Composition root of the inference consumer (``cells.cropped`` → ``cells.stained``)."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import structlog

from stainless.core.config import load_settings
from stainless.core.db.engine import create_db_engine, ping, wait_for_database
from stainless.core.events import ALL_TOPICS, create_bus
from stainless.core.events.bus import HandlerInterrupted
from stainless.core.inference import create_inference
from stainless.core.inference.manifest import read_manifest
from stainless.core.logs import configure_logging
from stainless.core.observability import HealthServer, create_health_app
from stainless.core.storage import create_store
from stainless.stages.inference.stage import CellStainer, inference_consumer

log = structlog.get_logger(__name__)


def main() -> None:
    settings = load_settings()
    configure_logging(settings.log)
    engine = create_db_engine(settings.database)
    wait_for_database(engine)
    bus = create_bus(settings.bus, client_id="stainless-inference")
    bus.ensure_topics(ALL_TOPICS)
    inference = create_inference(settings.inference)
    stop = threading.Event()
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
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    health.start()
    log.info(
        "inference consumer started",
        backend=settings.inference.backend.value,
        model_version=stainer.model_version,
    )
    try:
        consumer.run(stop)
    except HandlerInterrupted:
        log.info("stopped in the middle of an event; it will be delivered again")
    finally:
        consumer.close()
        inference.close()
        bus.close()
        health.stop()


if __name__ == "__main__":
    main()
