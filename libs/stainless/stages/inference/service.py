"""The inference consumer process (``cells.cropped`` → ``cells.stained``)."""

from __future__ import annotations

import threading
from collections.abc import Callable
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
from stainless.core.storage import ObjectStore, create_store
from stainless.domain.served import ManifestError, ServedManifest, parse_manifest
from stainless.stages.inference.profile import StageProfile
from stainless.stages.inference.stage import CellStainer, inference_consumer

__all__ = ["InferenceServiceSettings", "build", "manifest_reader"]


class InferenceServiceSettings(ProcessSettings):
    """What the inference consumer reads."""

    database: DatabaseSettings = DatabaseSettings()
    store: StoreSettings = StoreSettings()
    bus: BusSettings = BusSettings()
    inference: InferenceSettings = InferenceSettings()
    clinical: ClinicalSettings = ClinicalSettings()


def manifest_reader(
    settings: InferenceSettings, store: ObjectStore
) -> Callable[[], ServedManifest]:
    """Reads the served manifest: from the object store at ``manifest_key`` (where Triton
    reads its repository), else from the local ``model_repository``.

    The reader raises :class:`ManifestError` when the manifest is missing or invalid."""
    key = settings.manifest_key
    if key is None:
        repository = Path(settings.model_repository)
        return lambda: read_manifest(repository)

    def read() -> ServedManifest:
        try:
            data = store.get(key)
        except KeyError:
            raise ManifestError(
                f"{key} is missing in the object store: promote a model with --mirror"
            ) from None
        except Exception as exc:  # a store outage: the stage keeps the current model
            raise ManifestError(f"{key} cannot be read from the object store: {exc}") from exc
        return parse_manifest(data, source=key)

    return read


def build(
    settings: InferenceServiceSettings,
    stop: threading.Event,
    *,
    engine: Engine | None = None,
    bus: EventBus | None = None,
    profile: StageProfile | None = None,
) -> Service:
    """The consumer, its inference port, its stainer and its health server; a process that
    runs several stages (the embedded demo) passes its one engine and bus, and a
    ``profile`` to read where the stage's time went."""
    ports = connect(
        settings.database, settings.bus, client_id="stainless-inference", engine=engine, bus=bus
    )
    store = create_store(settings.store)
    manifest = manifest_reader(settings.inference, store)
    inference = create_inference(
        settings.inference, manifest() if settings.inference.manifest_key else None
    )
    stainer = CellStainer(
        store=store,
        inference=inference,
        settings=settings.inference,
        pathological_classes=settings.clinical.pathological_classes,
        stop=stop,
        repository=manifest,
        profile=profile,
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
