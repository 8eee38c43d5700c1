"""From an ingested field to cropped cells: register, detect, crop, record.

One :class:`FieldProcessor` serves the registration consumer (through the Celery
task) and the demo. Processing a field twice changes nothing: the registration
row is unique per slide and field, crop keys are deterministic, and the rows and
the ``cells.cropped`` event commit in one transaction.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import structlog
from prometheus_client import Counter, Histogram
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from stainless.core.config import IngestionSettings, RegistrationSettings
from stainless.core.db.engine import session_scope
from stainless.core.db.models import (
    Cell,
    FieldImage,
    Modality,
    Registration,
    RegistrationStatus,
    Slide,
)
from stainless.core.decoding import shared_decoder
from stainless.core.events.contracts import CellsCropped, Envelope
from stainless.core.events.outbox import add_event
from stainless.core.storage import ObjectStore
from stainless.core.storage.keys import crop_key
from stainless.imaging.codecs import encode_png
from stainless.imaging.cropping import Cropper, box_centre
from stainless.imaging.detection import (
    Detection,
    UnreliableFieldError,
    WbcDetector,
    boxes_to_dic,
)
from stainless.imaging.registration import Registrar, RegistrationResult
from stainless.stages.registration.detectors import build_detectors, describe_detectors
from stainless.stages.registration.images import FieldImages, ImageRejected

log = structlog.get_logger(__name__)

FIELDS = Counter("stainless_fields_processed_total", "Fields processed", ["outcome"])
CELLS = Counter("stainless_cells_cropped_total", "White cells cropped")
SECONDS = Histogram("stainless_field_seconds", "Seconds to register, detect and crop a field")


class Outcome(StrEnum):
    CROPPED = "cropped"
    REJECTED = "rejected"
    WAITING = "waiting"  # the other modality has not arrived yet
    ALREADY_DONE = "already_done"


@dataclass(frozen=True)
class FieldResult:
    outcome: Outcome
    cells: int = 0
    ecc: float | None = None
    reason: str | None = None


@dataclass(frozen=True)
class _Crops:
    dic: str
    bf: str | None
    review: str
    review_bf: str | None
    at_border: bool


class FieldProcessor:
    def __init__(
        self,
        *,
        engine: Engine,
        store: ObjectStore,
        images: FieldImages,
        registrar: Registrar,
        bf_detector: WbcDetector,
        dic_detector: WbcDetector,
        cropper: Cropper,
        crop_sizes: tuple[int, int] = (256, 360),
        crops_prefix: str = "cells",
    ) -> None:
        self._engine = engine
        self._store = store
        self._images = images
        self._registrar = registrar
        self._bf_detector = bf_detector
        self._dic_detector = dic_detector
        self._cropper = cropper
        self._train_size, self._review_size = crop_sizes
        self._prefix = crops_prefix

    def process(self, slide_id: str, field_index: int) -> FieldResult:
        started = time.perf_counter()
        with Session(self._engine) as session:
            slide = session.get(Slide, slide_id)
            if slide is None:
                raise LookupError(f"no slide {slide_id}")
            done = session.exec(
                select(Registration).where(
                    Registration.slide_id == slide_id, Registration.field_index == field_index
                )
            ).first()
            if done is not None:
                return FieldResult(Outcome.ALREADY_DONE, ecc=done.ecc_score)
            fields = {
                f.modality: f
                for f in session.exec(
                    select(FieldImage).where(
                        FieldImage.slide_id == slide_id, FieldImage.index == field_index
                    )
                )
            }
        dic_field = fields.get(Modality.DIC)
        bf_field = fields.get(Modality.BF)
        if dic_field is None or (bf_field is None and not slide.dic_only):
            return FieldResult(Outcome.WAITING)
        try:
            dic = self._images.load(dic_field)
            bf = None if bf_field is None else self._images.load(bf_field)
        except ImageRejected as exc:
            result = self._reject(slide_id, field_index, f"the upload does not decode: {exc}")
        else:
            result = self._process(slide_id, field_index, dic, bf)
        FIELDS.labels(result.outcome.value).inc()
        SECONDS.observe(time.perf_counter() - started)
        log.info(
            "field processed",
            slide_id=slide_id,
            field_index=field_index,
            outcome=result.outcome.value,
            cells=result.cells,
            ecc=result.ecc,
        )
        return result

    def _process(
        self, slide_id: str, field_index: int, dic: np.ndarray, bf: np.ndarray | None
    ) -> FieldResult:
        """Register (with a brightfield image), detect, crop and record one field."""
        if bf is None:
            try:
                found = self._dic_detector.detect(dic)
            except UnreliableFieldError as exc:
                return self._reject(slide_id, field_index, f"detection unreliable: {exc}")
            return self._record(slide_id, field_index, dic, None, None, found)
        registration = self._registrar.register(dic, bf)
        if not registration.accepted:
            reason = registration.reason or "rejected"
            return self._reject(slide_id, field_index, reason, registration)
        try:
            found = self._bf_detector.detect(bf)
        except UnreliableFieldError as exc:
            reason = f"detection unreliable: {exc}"
            return self._reject(slide_id, field_index, reason, registration)
        height, width = dic.shape[:2]
        boxes = boxes_to_dic(found, registration.affine_bf_to_dic, width, height)
        return self._record(slide_id, field_index, dic, bf, registration, boxes)

    def _reject(
        self,
        slide_id: str,
        field_index: int,
        reason: str,
        registration: RegistrationResult | None = None,
    ) -> FieldResult:
        """Record a field that yields no cells, with the reason (the transform if any)."""
        ecc = None if registration is None else registration.ecc
        row = Registration(
            slide_id=slide_id,
            field_index=field_index,
            transform=None if registration is None else registration.affine_bf_to_dic.tolist(),
            ecc_score=ecc,
            status=RegistrationStatus.REJECTED,
            reason=reason,
        )
        try:
            with session_scope(self._engine) as session:
                session.add(row)
                session.flush()
                # No cells, but the field is done: the slide's completion counts on it.
                payload = CellsCropped(
                    slide_id=slide_id, field_index=field_index, registration_id=row.id, cell_ids=[]
                )
                add_event(session, Envelope.wrap(payload, key=slide_id))
        except IntegrityError:
            return FieldResult(Outcome.ALREADY_DONE, ecc=ecc)
        return FieldResult(Outcome.REJECTED, ecc=ecc, reason=reason)

    def _record(
        self,
        slide_id: str,
        field_index: int,
        dic: np.ndarray,
        bf: np.ndarray | None,
        registration: RegistrationResult | None,
        detections: list[Detection],
    ) -> FieldResult:
        crops = [
            self._store_crops(slide_id, field_index, i, dic, bf, registration, d)
            for i, d in enumerate(detections)
        ]
        row = Registration(
            slide_id=slide_id,
            field_index=field_index,
            transform=None if registration is None else registration.affine_bf_to_dic.tolist(),
            ecc_score=None if registration is None else registration.ecc,
            status=RegistrationStatus.ACCEPTED,
            reason="DIC-only slide: cells detected on DIC" if registration is None else None,
        )
        try:
            with session_scope(self._engine) as session:
                session.add(row)
                session.flush()
                cells = [
                    Cell(
                        slide_id=slide_id,
                        field_index=field_index,
                        index=i,
                        x0=d.box[0],
                        y0=d.box[1],
                        x1=d.box[2],
                        y1=d.box[3],
                        dic_crop_key=c.dic,
                        bf_crop_key=c.bf,
                        review_crop_key=c.review,
                        review_bf_crop_key=c.review_bf,
                        at_border=c.at_border,
                    )
                    for i, (d, c) in enumerate(zip(detections, crops, strict=True))
                ]
                session.add_all(cells)
                session.flush()
                payload = CellsCropped(
                    slide_id=slide_id,
                    field_index=field_index,
                    registration_id=row.id,
                    cell_ids=[cell.id for cell in cells],
                )
                add_event(session, Envelope.wrap(payload, key=slide_id))
        except IntegrityError:
            # A concurrent run recorded this field first; its crops have the same keys.
            return FieldResult(Outcome.ALREADY_DONE)
        CELLS.inc(len(detections))
        ecc = None if registration is None else registration.ecc
        return FieldResult(Outcome.CROPPED, cells=len(detections), ecc=ecc)

    def _store_crops(
        self,
        slide_id: str,
        field_index: int,
        cell_index: int,
        dic: np.ndarray,
        bf: np.ndarray | None,
        registration: RegistrationResult | None,
        detection: Detection,
    ) -> _Crops:
        centre = box_centre(detection.box)
        stem = f"{self._prefix}/{slide_id}/{field_index:04d}/{cell_index:03d}"
        keys: dict[str, str | None] = {}
        at_border = False
        for size, name in ((self._train_size, ""), (self._review_size, "review_")):
            crop = self._cropper.crop(dic, centre, size)
            at_border |= crop.at_border
            keys[f"{name}dic"] = key = crop_key(stem, "dic", size)
            self._store.put(key, encode_png(crop.image), content_type="image/png")
            keys[f"{name}bf"] = None
            if bf is not None and registration is not None:
                bf_crop = self._cropper.crop_registered(
                    bf, registration.affine_bf_to_dic, centre, size
                )
                keys[f"{name}bf"] = key = crop_key(stem, "bf", size)
                self._store.put(key, encode_png(bf_crop.image), content_type="image/png")
        return _Crops(
            dic=str(keys["dic"]),
            bf=keys["bf"],
            review=str(keys["review_dic"]),
            review_bf=keys["review_bf"],
            at_border=at_border,
        )


def build_field_processor(
    settings: RegistrationSettings,
    *,
    engine: Engine,
    store: ObjectStore,
    uploads: IngestionSettings | None = None,
) -> FieldProcessor:
    """The processor with the detectors the settings select, the scanner's optics and thresholds;
    uploads stored as received are decoded within ``uploads``' memory cap.

    Raises:
        DetectorUnavailable: a learned detector is selected and none is exported.
    """
    detectors = build_detectors(settings)
    log.info("detectors selected", detectors=describe_detectors(settings.detector))
    uploads = uploads or IngestionSettings()
    images = FieldImages(
        engine,
        store,
        shared_decoder(uploads.max_decode_bytes, uploads.decode_workers),
        keep_received=uploads.keep_original,
    )
    return FieldProcessor(
        engine=engine,
        store=store,
        images=images,
        registrar=Registrar(
            min_ecc=settings.min_ecc, shear_angle_deg=settings.optics.shear_angle_deg
        ),
        bf_detector=detectors.brightfield,
        dic_detector=detectors.dic,
        cropper=Cropper(sizes=settings.crop_sizes),
        crop_sizes=settings.crop_sizes,
        crops_prefix=settings.crops_prefix,
    )
