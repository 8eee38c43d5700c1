"""The inference consumer process (``cells.cropped`` → ``cells.stained``)."""

from __future__ import annotations

import threading
from pathlib import Path

from prometheus_client import REGISTRY
from sqlalchemy import Engine

from stainless.core.config import (
    BusSettings,
    ClinicalSettings,
    DatabaseSettings,
    InferenceSettings,
    ProcessSettings,
    StoreSettings,
)
from stainless.core.db.engine import ping
from stainless.core.events import EventBus
from stainless.core.inference import create_inference
from stainless.core.inference.manifest import read_manifest
from stainless.core.inference.statistics import TritonStatisticsCollector
from stainless.core.inference.triton import TritonInference
from stainless.core.observability import HealthServer, create_health_app
from stainless.core.runners import Service, connect
from stainless.core.storage import create_store
from stainless.stages.inference.stage import CellStainer, inference_consumer

__all__ = ["InferenceServiceSettings", "build"]


class InferenceServiceSettings(ProcessSettings):
    """What the inference consumer reads."""

    database: DatabaseSettings = DatabaseSettings()
    store: StoreSettings = StoreSettings()
    bus: BusSettings = BusSettings()
    inference: InferenceSettings = InferenceSettings()
    clinical: ClinicalSettings = ClinicalSettings()


def build(
    settings: InferenceServiceSettings,
    stop: threading.Event,
    *,
    engine: Engine | None = None,
    bus: EventBus | None = None,
) -> Service:
    """The consumer, its inference port, its stainer and its health server; a process that
    runs several stages (the embedded demo) passes its one engine and bus."""
    ports = connect(
        settings.database, settings.bus, client_id="stainless-inference", engine=engine, bus=bus
    )
    inference = create_inference(settings.inference)
    repository = Path(settings.inference.model_repository)
    stainer = CellStainer(
        store=create_store(settings.store),
        inference=inference,
        settings=settings.inference,
        pathological_classes=settings.clinical.pathological_classes,
        stop=stop,
        repository=lambda: read_manifest(repository),
    )
    consumer = inference_consumer(ports.bus, ports.engine, stainer)
    collector = None
    if isinstance(inference, TritonInference):  # the server's queue and compute time
        collector = TritonStatisticsCollector(inference.statistics)
        REGISTRY.register(collector)
    health = HealthServer(
        create_health_app(
            lambda: ping(ports.engine) and inference.ready(), title="stainless-inference"
        ),
        port=settings.inference.http_port,
    )

    def close() -> None:
        if collector is not None:
            REGISTRY.unregister(collector)
        consumer.close()
        inference.close()
        ports.close()

    return Service(
        name="stainless-inference",
        loop=consumer,
        health=health,
        close=close,
        details={
            "backend": settings.inference.backend.value,
            "model_version": stainer.model_version,
            "review_threshold": stainer.review_threshold,
        },
    )
