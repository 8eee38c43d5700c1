"""The demo: one phantom slide through the whole pipeline, on embedded defaults.

It composes the same ``build`` of each stage that the services run, on one engine and one
bus, and runs their loops a round at a time until the pipeline is idle.

Steps: migrate the database; export the demo model into the model repository if it is
not there yet, and the learned detectors the demo selects (``DEMO_DETECTORS``: the
better of each modality in ``stainless bench robustness``, unless the settings choose);
render a phantom slide through the task queue into the object store
(the "scanner's disk"); upload its fields through the ingestion API with a scanner
key; relay the outbox onto the bus; the registration consumer registers, detects and
crops each field; the inference consumer stains, classifies and scores every cell and
completes the slide; write ``summary.json`` (slide, cells, differential, cells needing
review, mean δ, registration errors against the phantom's ground truth, the detectors
that ran, elapsed seconds), ``report.html`` and ``phantom.png``.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import structlog
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlmodel import Session, col, func, select

from stainless.core import relay
from stainless.core.config import DetectorKind, Settings, part
from stainless.core.db.cells import CellView, cell_views
from stainless.core.db.engine import create_db_engine, session_scope
from stainless.core.db.migrate import upgrade
from stainless.core.db.models import Cell, OutboxEvent, Registration, Scanner
from stainless.core.events import ALL_TOPICS, EventBus, create_bus
from stainless.core.inference.manifest import read_manifest
from stainless.core.registry import RegistryError
from stainless.core.relay import RelayServiceSettings
from stainless.core.runners import Service
from stainless.core.storage import ObjectStore, create_store
from stainless.core.tasks import create_celery
from stainless.datasets.phantom import register_phantom_task
from stainless.domain.differential import ClinicalRules, differential, flags
from stainless.domain.review import ReviewStatus
from stainless.domain.served import MANIFEST
from stainless.domain.vocabulary import clinical_class, vocabulary_for
from stainless.imaging.detection import Detection, match_boxes, matched_pairs
from stainless.imaging.registration import corner_error_px
from stainless.ml.export.checkpoint import export_checkpoint
from stainless.ml.export.detector import DETECTOR_MANIFEST, DETECTOR_MODELS, write_detector
from stainless.ml.export.triton import InstanceKind
from stainless.ml.models.detector import Modality
from stainless.stages.inference import service as inference
from stainless.stages.inference.profile import StageProfile
from stainless.stages.inference.service import InferenceServiceSettings
from stainless.stages.ingestion import api as ingestion
from stainless.stages.ingestion.api import IngestionServiceSettings
from stainless.stages.ingestion.scanners import register_scanner, rotate_key
from stainless.stages.registration import service as registration
from stainless.stages.registration.detectors import describe_detectors
from stainless.stages.registration.service import RegistrationServiceSettings
from stainless.stages.retraining.promotion import adopt_served
from stainless.stages.review.queries import slide_summary
from stainless.stages.review.report import write_report

log = structlog.get_logger(__name__)

DEMO_SCANNER = "demo-scanner"
CLINICAL_SLIDE = "clinical-mix"
"""The slide preset of the demo's clinical slide (thesis Table 8.1's proportions)."""
DEMO_DETECTORS = {"brightfield": DetectorKind.LEARNED, "dic": DetectorKind.LEARNED}
"""The detector of each modality with more grid cells on target in ``bench robustness``
(``docs/reference/performance.md``, "Slides from any lab", ``docs/robustness.json``)."""
DETECTOR_CHECKPOINTS = Path(__file__).resolve().parents[2] / "training/detector_model"
"""The committed phantom-trained detectors (``bf.pt``, ``dic.pt``), from the source tree."""


def _scanner_key(engine: Engine) -> str:
    with session_scope(engine) as session:
        if session.exec(select(Scanner).where(Scanner.name == DEMO_SCANNER)).first():
            return rotate_key(session, name=DEMO_SCANNER)
        return register_scanner(session, name=DEMO_SCANNER)[1]


def _upload_slide(
    client: TestClient, store: ObjectStore, entry: dict[str, Any], run_id: str
) -> str:
    response = client.post(
        "/v1/slides",
        json={"external_id": run_id, "patient_pseudonym": "phantom", "acquisition": {"demo": True}},
    )
    response.raise_for_status()
    slide_id = str(response.json()["id"])
    for field in entry["fields"]:
        for modality, key in (("DIC", field["dic"]), ("BF", field["bf"])):
            client.post(
                f"/v1/slides/{slide_id}/fields",
                files={
                    "file": (key.rsplit("/", 1)[-1], store.get(key), "application/octet-stream")
                },
                data={"modality": modality, "index": str(field["index"])},
                headers={"Idempotency-Key": f"{run_id}-{field['index']}-{modality}"},
            ).raise_for_status()
    client.post(f"/v1/slides/{slide_id}/complete").raise_for_status()
    return slide_id


def _process(
    services: dict[str, Service], engine: Engine, slide_id: str
) -> tuple[dict[str, int], dict[str, float]]:
    """Run each stage's loop a round at a time until the pipeline is idle.

    Returns the slide's events per topic and the seconds each stage (relay, registration,
    inference) spent handling them.
    """
    seconds = dict.fromkeys(services, 0.0)
    busy = True
    while busy:
        busy = False
        for name, service in services.items():
            started = time.perf_counter()
            busy = service.loop.poll_once() > 0 or busy
            seconds[name] += time.perf_counter() - started
    with Session(engine) as session:
        rows = session.exec(
            select(OutboxEvent.topic, func.count())
            .where(OutboxEvent.key == slide_id, col(OutboxEvent.published_at).is_not(None))
            .group_by(col(OutboxEvent.topic))
        ).all()
    published = {topic: int(count) for topic, count in sorted(rows)}
    return published, {name: round(value, 3) for name, value in seconds.items()}


def _record_phantom_truth(engine: Engine, slide_id: str, entry: dict[str, Any]) -> int:
    """Give each cropped cell the class of the phantom cell its box matches (IoU ≥ 0.5) as
    its ground truth, the reference of a validation study; the number of cells given one."""
    truth = {f["index"]: f["cells"] for f in entry["fields"]}
    given = 0
    with session_scope(engine) as session:
        cells = session.exec(select(Cell).where(Cell.slide_id == slide_id)).all()
        for index, expected in truth.items():
            found = [c for c in cells if c.field_index == index]
            boxes = [(c.x0, c.y0, c.x1, c.y1) for c in found]
            for i, j in matched_pairs(boxes, [tuple(c["box_dic"]) for c in expected]):
                found[i].true_class = expected[j]["class"]
                session.add(found[i])
                given += 1
    return given


def _registration_report(engine: Engine, slide_id: str, entry: dict[str, Any]) -> dict[str, Any]:
    with Session(engine) as session:
        rows = session.exec(select(Registration).where(Registration.slide_id == slide_id)).all()
        cells = session.exec(select(Cell).where(Cell.slide_id == slide_id)).all()
    truth = {f["index"]: f for f in entry["fields"]}
    per_field: list[dict[str, Any]] = []
    errors: list[float] = []
    matched = missed = extra = 0
    for row in sorted(rows, key=lambda r: r.field_index):
        field = truth[row.field_index]
        error = None
        if row.transform is not None:
            error = corner_error_px(
                np.asarray(row.transform),
                np.asarray(field["affine_bf_to_dic"]),
                field["width"],
                field["height"],
            )
            errors.append(error)
        found = [
            Detection(box=(c.x0, c.y0, c.x1, c.y1), score=1.0)
            for c in cells
            if c.field_index == row.field_index
        ]
        expected = [Detection(box=tuple(c["box_dic"]), score=1.0) for c in field["cells"]]
        tp, fp, fn = match_boxes(found, expected)
        matched, extra, missed = matched + tp, extra + fp, missed + fn
        per_field.append(
            {
                "field": row.field_index,
                "status": str(row.status),
                "ecc": None if row.ecc_score is None else round(row.ecc_score, 4),
                "corner_error_px": None if error is None else round(error, 3),
                "cells": len(found),
            }
        )
    return {
        "cells_cropped": len(cells),
        "cells_at_border": sum(c.at_border for c in cells),
        "detection": {"matched": matched, "missed": missed, "extra": extra},
        "registration": {
            "fields": per_field,
            "max_corner_error_px": max(errors) if errors else None,
            "median_corner_error_px": float(np.median(errors)) if errors else None,
        },
    }


EXPORT_STAMP = ".demo-export"
"""Beside the manifest of a repository the demo exported: what it was exported from."""


def export_fingerprint(checkpoint: Path) -> str:
    """SHA-256 of what the demo's served model is made of: the checkpoint, its config and
    metrics (the review threshold) and the code that exports it and computes δ."""
    import stainless.ml.confidence as confidence
    import stainless.ml.export as export

    files = [checkpoint, checkpoint.parent / "config.yaml", checkpoint.parent / "metrics.json"]
    for package in (export, confidence):
        files += sorted(Path(package.__file__).parent.glob("*.py"))  # type: ignore[arg-type]
    digest = hashlib.sha256()
    for path in files:
        if path.is_file():
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _export_model(settings: Settings, checkpoint: Path) -> None:
    """Export ``checkpoint`` into the inference model repository when it is empty, or when
    the demo exported it from another checkpoint, metrics or code (a repository the demo
    did not write, e.g. a promoted model, is left as it is)."""
    repo = Path(settings.inference.model_repository)
    stamp = repo / EXPORT_STAMP
    fingerprint = export_fingerprint(checkpoint)
    if (repo / MANIFEST).is_file():
        if not stamp.is_file() or stamp.read_text() == fingerprint:
            return
        log.info("the demo model changed since its export", repo=str(repo))
    log.info("exporting the demo model", checkpoint=str(checkpoint), repo=str(repo))
    export_checkpoint(checkpoint, repo, instance=InstanceKind.CPU)
    stamp.write_text(fingerprint)


def _register_model(engine: Engine, store: ObjectStore, repo: Path, checkpoint: Path) -> None:
    """Register the exported demo model as the version served, so that a rollback can
    return to it (a repository that serves a registered version is left as it is)."""
    if read_manifest(repo).model_version_id is not None:
        return
    try:
        adopted = adopt_served(engine, store, repo, checkpoint)
    except RegistryError as exc:
        log.warning("the served model is not registered", reason=str(exc))
        return
    log.info("the demo model is registered", model=f"{adopted.name}/{adopted.version}")


def _stages(
    settings: Settings, engine: Engine, bus: EventBus, profile: StageProfile
) -> dict[str, Service]:
    """The relay and the two consumer stages, from the builds their services run, on one
    engine and one bus; the inference stage's phases go to ``profile``.

    The stages take turns in one thread (:func:`_process`), so no event can arrive while
    one of them waits: the inference stage gathers what is there and does not wait for
    more (``max_wait_s`` = 0; a deployed consumer waits, as its settings say)."""
    stop = threading.Event()
    turns = settings.inference.model_copy(update={"max_wait_s": 0.0})
    settings = settings.model_copy(update={"inference": turns})
    return {
        "relay": relay.build(part(settings, RelayServiceSettings), stop, engine=engine, bus=bus),
        "registration": registration.build(
            part(settings, RegistrationServiceSettings),
            stop,
            engine=engine,
            bus=bus,
            wait_for_fields=True,
        ),
        "inference": inference.build(
            part(settings, InferenceServiceSettings),
            stop,
            engine=engine,
            bus=bus,
            profile=profile,
        ),
    }


def _demo_detectors(settings: Settings, checkpoints: Path) -> Settings:
    """``settings`` with ``DEMO_DETECTORS`` where they leave a modality's detector unset,
    and the inference model repository unless they name the detectors' own; a selected
    learned detector is exported from ``checkpoints/<bf|dic>.pt`` when missing there."""
    chosen = settings.registration.detector
    defaults = {**DEMO_DETECTORS, "model_repository": settings.inference.model_repository}
    detector = chosen.model_copy(
        update={k: v for k, v in defaults.items() if k not in chosen.model_fields_set}
    )
    repo = Path(detector.model_repository)
    for modality, kind in (("bf", detector.brightfield), ("dic", detector.dic)):
        name = DETECTOR_MODELS[Modality(modality)]
        if kind is DetectorKind.LEARNED and not (repo / name / DETECTOR_MANIFEST).is_file():
            log.info("exporting a learned detector", name=name, repo=str(repo))
            write_detector(checkpoints / f"{modality}.pt", repo, instance=InstanceKind.CPU)
    registration = settings.registration.model_copy(update={"detector": detector})
    return settings.model_copy(update={"registration": registration})


@dataclass(frozen=True)
class _TrueCell:
    effective_class: str
    review_status: ReviewStatus = ReviewStatus.CONFIRMED


def _truth_report(
    entry: dict[str, Any], views: list[CellView], rules: ClinicalRules
) -> dict[str, Any]:
    """The phantom's classes, the pathological flags a perfect classifier would raise, and
    the classes the served model cannot give (it never predicts a class it was not trained
    on: a blast is called something else)."""
    truth = [_TrueCell(cell["class"]) for field in entry["fields"] for cell in field["cells"]]
    classes = Counter(cell.effective_class for cell in truth)
    vocabulary = vocabulary_for(classes)
    known = {
        clinical_class(code)
        for view in views
        if view.prediction is not None
        for code in view.prediction.probabilities
    }
    return {
        "white_cells_ground_truth": sum(classes.values()),
        "ground_truth_classes": dict(sorted(classes.items())),
        "ground_truth_flags": flags(differential(truth, vocabulary), rules).pathological,
        "classes_the_model_does_not_know": sorted(
            {code for code in classes if clinical_class(code) not in known}
        ),
    }


def _confidence_report(views: list[CellView]) -> dict[str, Any]:
    deltas = [v.prediction.confidence for v in views if v.prediction and v.prediction.confidence]
    return {"mean_delta": round(float(np.mean(deltas)), 4) if deltas else None}


def run_demo(
    settings: Settings,
    *,
    out: Path,
    fields: int,
    seed: int,
    checkpoint: Path,
    detector_checkpoints: Path = DETECTOR_CHECKPOINTS,
    clinical_fields: int = 0,
) -> tuple[Path, str]:
    """Run the demo; return the path of ``summary.json`` and the (healthy) slide's id.

    ``checkpoint`` is exported when the model repository is empty; ``detector_checkpoints``
    holds the learned detectors (``bf.pt``, ``dic.pt``) exported when selected and missing.
    With ``clinical_fields``, a second slide of that many fields holds the twelve clinical
    classes (``CLINICAL_SLIDE``); its summary is ``clinical_slide`` in ``summary.json``
    and its report ``clinical/report.html``.
    """
    started = time.perf_counter()
    settings = _demo_detectors(settings, detector_checkpoints)
    out.mkdir(parents=True, exist_ok=True)
    upgrade(settings.database.url)
    engine = create_db_engine(settings.database)
    store = create_store(settings.store)
    _export_model(settings, checkpoint)
    _register_model(engine, store, Path(settings.inference.model_repository), checkpoint)
    bus = create_bus(settings.bus, client_id="stainless-demo")
    bus.ensure_topics(ALL_TOPICS)
    profile = StageProfile()
    services = _stages(settings, engine, bus, profile)
    stained = services["inference"].details

    task = register_phantom_task(create_celery(settings.tasks), settings.store)
    api = ingestion.build(part(settings, IngestionServiceSettings), engine=engine)
    scanner_key = _scanner_key(engine)

    def run_slide(index: int, count: int, preset: str | None, folder: Path) -> dict[str, Any]:
        """Render, upload and process one phantom slide; its report in ``folder``."""
        run_id = f"demo-{seed}-{uuid.uuid4().hex[:8]}"
        prefix = f"phantom/{run_id}"
        entry: dict[str, Any] = task.delay(
            prefix=prefix, slide_index=index, fields=count, seed=seed, slide=preset
        ).get(timeout=settings.tasks.task_time_limit_s)
        pipeline_started = time.perf_counter()
        with TestClient(api, headers={"X-API-Key": scanner_key}) as client:
            slide_id = _upload_slide(client, store, entry, run_id)
        upload_s = time.perf_counter() - pipeline_started
        profile.clear()
        published, stage_seconds = _process(services, engine, slide_id)
        pipeline_s = time.perf_counter() - pipeline_started
        with_truth = _record_phantom_truth(engine, slide_id, entry)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "phantom.png").write_bytes(store.get(f"{prefix}/{entry['slide']}/phantom.png"))
        results = slide_summary(engine, slide_id=slide_id, rules=settings.clinical.rules())
        with Session(engine) as session:
            views = cell_views(session, slide_id=slide_id)
        write_report(
            folder / "report.html",
            summary=results,
            views=views,
            store=store,
            threshold=float(stained["review_threshold"]),  # type: ignore[arg-type]
            model_version=str(stained["model_version"]),
        )
        return {
            "slide_id": slide_id,
            "slide_preset": preset or "healthy",
            "status": results.slide.status.value,
            "cell_count": results.differential.total,
            "vocabulary": results.differential.vocabulary,
            "differential": {
                code: {"count": count, "percent": results.differential.percent.get(code)}
                for code, count in results.differential.counts.items()
            },
            "needs_review": results.differential.needs_review,
            "flags": {
                "pathological": results.flags.pathological,
                "abnormal": [str(abnormal) for abnormal in results.flags.abnormal],
                "proportions_assessed": results.flags.proportions_assessed,
            },
            **_confidence_report(views),
            "model_version": stained["model_version"],
            "external_id": run_id,
            "fields": len(entry["fields"]),
            "images_uploaded": 2 * len(entry["fields"]),
            **_truth_report(entry, views, settings.clinical.rules()),
            "cells_with_ground_truth": with_truth,
            **_registration_report(engine, slide_id, entry),
            "events_published": published,
            "seconds": {
                "upload": round(upload_s, 3),
                **stage_seconds,
                "pipeline": round(pipeline_s, 3),
            },
            "inference_profile": profile.as_dict(),
        }

    summary = run_slide(0, fields, None, out)
    slide_id = summary["slide_id"]
    if clinical_fields:
        clinical = run_slide(1, clinical_fields, CLINICAL_SLIDE, out / "clinical")
        summary["clinical_slide"] = {
            key: clinical[key]
            for key in (
                "slide_id",
                "slide_preset",
                "cell_count",
                "vocabulary",
                "differential",
                "needs_review",
                "flags",
                "fields",
                "white_cells_ground_truth",
                "ground_truth_classes",
                "ground_truth_flags",
                "classes_the_model_does_not_know",
                "detection",
            )
        } | {"report": str(out / "clinical" / "report.html")}
    summary |= {
        "detectors": describe_detectors(settings.registration.detector),
        "database": make_url(settings.database.url).get_backend_name(),
        "store": settings.store.backend.value,
        "bus": settings.bus.backend.value,
        "tasks": "eager" if settings.tasks.eager else "celery",
        "elapsed_s": round(time.perf_counter() - started, 2),
    }
    path = out / "summary.json"
    path.write_text(json.dumps(summary, indent=2) + "\n")
    for service in services.values():
        service.close()
    bus.close()
    engine.dispose()
    log.info(
        "demo finished",
        slide_id=slide_id,
        cells=summary["cells_cropped"],
        elapsed_s=summary["elapsed_s"],
    )
    return path, slide_id
