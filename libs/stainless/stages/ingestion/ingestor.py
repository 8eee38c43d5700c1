"""The Ingestor: open slides, accept field uploads, complete slides — all-or-nothing.

Every check runs before anything is stored. The image goes to the object store
under a key unique to the upload; the field row and its ``fields.ingested`` event
then commit in one transaction, and if that fails the object is deleted again.
A request sent with an ``Idempotency-Key`` stores its first answer in the same
transaction, and a retry gets that answer back without storing anything twice.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, BinaryIO

import structlog
from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, func, select

from stainless.core.config import IngestionSettings
from stainless.core.db.engine import session_scope
from stainless.core.db.models import (
    Cell,
    FieldImage,
    IdempotencyRecord,
    Modality,
    Registration,
    Scanner,
    Slide,
    SlideStatus,
    new_id,
)
from stainless.core.db.repository import create_slide
from stainless.core.events.contracts import Envelope, SlideCancelled, SlideUploaded
from stainless.core.events.outbox import add_event
from stainless.core.http.errors import Conflict, NotFound, ServiceError, TooLarge
from stainless.core.storage import ObjectStore
from stainless.imaging.codecs import ImageInfo, ImageRejected, probe
from stainless.stages.ingestion.decoding import CappedDecoder, shared_decoder
from stainless.stages.ingestion.records import record_field

log = structlog.get_logger(__name__)

UPLOADS = Counter("stainless_ingest_uploads_total", "Field uploads by outcome", ["outcome"])
UPLOAD_BYTES = Counter("stainless_ingest_bytes_total", "Bytes of accepted field uploads")

SAFE_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
_CHUNK = 1024 * 1024


class InvalidUpload(ServiceError):
    status, code = 422, "invalid_upload"


class ChecksumMismatch(ServiceError):
    status, code = 422, "checksum_mismatch"


MetadataKey = Annotated[str, StringConstraints(min_length=1, max_length=64)]
MetadataValue = (
    Annotated[str, StringConstraints(max_length=256)]
    | Annotated[int, Field(ge=-(2**53), le=2**53)]
    | Annotated[float, Field(allow_inf_nan=False)]
    | bool
)


class SlideRequest(BaseModel):
    """What a scanner sends to open a slide."""

    model_config = ConfigDict(extra="forbid")

    external_id: str = Field(pattern=SAFE_ID, description="The scanner's own slide id.")
    patient_pseudonym: str = Field(pattern=SAFE_ID, description="Pseudonym, never a name.")
    dic_only: bool = Field(default=False, description="No brightfield fields will be sent.")
    acquisition: Annotated[dict[MetadataKey, MetadataValue], Field(max_length=64)] = Field(
        default_factory=dict,
        description="Free acquisition metadata (objective, scanner model…): at most 64 "
        "entries of finite numbers, booleans and strings of up to 256 characters.",
    )


@dataclass(frozen=True)
class FieldUpload:
    slide_id: str
    index: int
    modality: Modality
    stream: BinaryIO
    sha256: str | None = None
    stage_x_um: float | None = None
    stage_y_um: float | None = None


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, Any]


def _fingerprint(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


class Ingestor:
    def __init__(
        self,
        engine: Engine,
        store: ObjectStore,
        settings: IngestionSettings,
        decoder: CappedDecoder | None = None,
    ) -> None:
        """``decoder`` defaults to the process's shared one for the settings' limits."""
        self._engine = engine
        self._store = store
        self._settings = settings
        self._decoder = decoder or shared_decoder(
            settings.max_decode_bytes, settings.decode_workers
        )

    # -- slides -------------------------------------------------------------------------

    def open_slide(
        self, scanner: Scanner, request: SlideRequest, *, idempotency_key: str | None = None
    ) -> Answer:
        fingerprint = _fingerprint("open", request.model_dump())

        def action(session: Session) -> Answer:
            existing = session.exec(
                select(Slide).where(
                    Slide.scanner_id == scanner.id, Slide.external_id == request.external_id
                )
            ).first()
            if existing is not None:
                if existing.status == SlideStatus.CANCELLED:
                    raise Conflict(
                        f"slide {request.external_id!r} was cancelled as {existing.id}: "
                        "open a new scan of it under another external id"
                    )
                raise Conflict(f"slide {request.external_id!r} is already open as {existing.id}")
            slide = create_slide(
                session,
                scanner_id=scanner.id,
                external_id=request.external_id,
                patient_pseudonym=request.patient_pseudonym,
                acquisition=dict(request.acquisition),
                dic_only=request.dic_only,
            )
            return Answer(201, _slide_body(slide, fields=[]))

        return self._once(scanner, idempotency_key, fingerprint, action)

    def slide_status(self, scanner: Scanner, slide_id: str) -> Answer:
        with Session(self._engine) as session:
            slide = self._owned_slide(session, scanner, slide_id)
            fields = session.exec(
                select(FieldImage)
                .where(FieldImage.slide_id == slide.id)
                .order_by(col(FieldImage.index), col(FieldImage.modality))
            ).all()
            body = _slide_body(slide, fields=list(fields))
            body["registrations"] = _count(session, Registration, slide.id)
            body["cells"] = _count(session, Cell, slide.id)
            return Answer(200, body)

    def complete_slide(self, scanner: Scanner, slide_id: str) -> Answer:
        with session_scope(self._engine) as session:
            slide = self._owned_slide(session, scanner, slide_id, lock=True)
            if slide.status == SlideStatus.CANCELLED:
                raise Conflict(f"slide {slide.id} is cancelled: it cannot be completed")
            fields = session.exec(select(FieldImage).where(FieldImage.slide_id == slide.id)).all()
            if not fields:
                raise Conflict(f"slide {slide.id} has no fields yet: upload them first")
            if slide.status == SlideStatus.OPEN:
                slide.status = SlideStatus.UPLOADED
                session.add(slide)
                indices = {f.index for f in fields}
                add_event(
                    session,
                    Envelope.wrap(
                        SlideUploaded(slide_id=slide.id, fields=len(indices)), key=slide.id
                    ),
                )
            return Answer(200, _slide_body(slide, fields=list(fields)))

    def cancel_slide(self, scanner: Scanner, slide_id: str) -> Answer:
        """Withdraw an open slide: it takes no more fields, is never completed nor reported,
        and what it holds stays for the audit (cancelling it again is harmless).

        Raises:
            Conflict: the slide was completed by its scanner already.
        """
        with session_scope(self._engine) as session:
            slide = self._owned_slide(session, scanner, slide_id, lock=True)
            fields = session.exec(select(FieldImage).where(FieldImage.slide_id == slide.id)).all()
            if slide.status == SlideStatus.OPEN:
                slide.status = SlideStatus.CANCELLED
                session.add(slide)
                indices = {f.index for f in fields}
                add_event(
                    session,
                    Envelope.wrap(
                        SlideCancelled(slide_id=slide.id, fields=len(indices)), key=slide.id
                    ),
                )
            elif slide.status != SlideStatus.CANCELLED:
                raise Conflict(
                    f"slide {slide.id} is {slide.status}: only an open slide can be cancelled"
                )
            return Answer(200, _slide_body(slide, fields=list(fields)))

    # -- fields -------------------------------------------------------------------------

    def upload_field(
        self, scanner: Scanner, upload: FieldUpload, *, idempotency_key: str | None = None
    ) -> Answer:
        try:
            answer = self._upload_field(scanner, upload, idempotency_key)
        except ServiceError as exc:
            UPLOADS.labels(exc.code).inc()
            raise
        UPLOADS.labels("accepted" if answer.status == 201 else "replayed").inc()
        return answer

    def _upload_field(
        self, scanner: Scanner, upload: FieldUpload, idempotency_key: str | None
    ) -> Answer:
        data = self._read(upload.stream)
        digest, size = hashlib.sha256(data).hexdigest(), len(data)
        fingerprint = _fingerprint(
            "field",
            upload.slide_id,
            upload.index,
            upload.modality.value,
            digest,
            upload.stage_x_um,
            upload.stage_y_um,
        )
        if idempotency_key is not None:
            replay = self._replay(scanner, idempotency_key, fingerprint)
            if replay is not None:
                return replay
        if upload.sha256 is not None and upload.sha256.lower() != digest:
            raise ChecksumMismatch(f"the upload's sha256 is {digest}, not {upload.sha256}")
        with Session(self._engine) as session:
            slide = self._owned_slide(session, scanner, upload.slide_id)
            info = self._check_header(session, slide, upload, data)
        field_id = new_id()
        key = f"{self._settings.raw_prefix}/{slide.id}/{field_id}.{info.format.value}"
        self._store_canonical(key, data, info)

        def action(session: Session) -> Answer:
            # The slide row is locked until commit: completing it waits for this field, or
            # this field sees it completed (the check above ran before the image was stored).
            locked = self._owned_slide(session, scanner, slide.id, lock=True)
            _require_open(locked)
            field = record_field(
                session,
                field_id=field_id,
                slide_id=slide.id,
                index=upload.index,
                modality=upload.modality,
                object_key=key,
                sha256=digest,
                size_bytes=size,
                width=info.width,
                height=info.height,
                stage_x_um=upload.stage_x_um,
                stage_y_um=upload.stage_y_um,
            )
            return Answer(201, _field_body(field))

        try:
            answer = self._once(scanner, idempotency_key, fingerprint, action)
        except BaseException:
            self._delete_objects(key)
            raise
        if answer.body.get("object_key") != key:  # a concurrent retry won: ours is surplus
            self._delete_objects(key)
        else:
            UPLOAD_BYTES.inc(size)
            log.info(
                "field ingested",
                slide_id=slide.id,
                index=upload.index,
                modality=upload.modality.value,
                bytes=size,
            )
        return answer

    def _delete_objects(self, key: str) -> None:
        self._store.delete(key)
        if self._settings.keep_original:
            self._store.delete(_original_key(key))

    def _read(self, stream: BinaryIO) -> bytes:
        """The whole upload, refused past ``max_upload_bytes`` (the memory bound of a request)."""
        stream.seek(0)
        data = stream.read(self._settings.max_upload_bytes + 1)
        if len(data) > self._settings.max_upload_bytes:
            raise TooLarge(f"the upload exceeds {self._settings.max_upload_bytes} bytes")
        return data

    def _store_canonical(self, key: str, data: bytes, info: ImageInfo) -> None:
        """Store the upload's pixels re-encoded (no further pages, no metadata) once they
        decode within the memory budget; the upload as sent too if the settings ask."""
        try:
            canonical = self._decoder.canonical(data, info)
        except ImageRejected as exc:
            raise InvalidUpload(str(exc)) from None
        self._store.put(key, canonical, content_type=info.content_type)
        if self._settings.keep_original:
            original = _original_key(key)
            try:
                self._store.put(original, data, content_type="application/octet-stream")
            except BaseException:
                self._store.delete(key)
                raise

    def _check_header(
        self, session: Session, slide: Slide, upload: FieldUpload, data: bytes
    ) -> ImageInfo:
        _require_open(slide)
        if slide.dic_only and upload.modality is Modality.BF:
            raise InvalidUpload(f"slide {slide.id} was opened as DIC-only")
        try:
            info = probe(io.BytesIO(data))
        except ImageRejected as exc:
            raise InvalidUpload(str(exc)) from None
        if info.pixels > self._settings.max_pixels:
            raise InvalidUpload(
                f"image of {info.width}x{info.height} pixels exceeds the limit of "
                f"{self._settings.max_pixels} pixels (refused before decoding)"
            )
        if upload.modality is Modality.DIC and info.channels != 1:
            raise InvalidUpload(f"a DIC field must be single-channel, got {info.channels} channels")
        if upload.modality is Modality.BF and info.channels != 3:
            raise InvalidUpload(f"a BF field must be RGB, got {info.channels} channels")
        if info.bit_depth not in (8, 16):
            raise InvalidUpload(f"only 8- or 16-bit images are accepted, got {info.bit_depth}")
        others = session.exec(select(FieldImage).where(FieldImage.slide_id == slide.id)).all()
        for other in others:
            if (other.width, other.height) != (info.width, info.height):
                raise InvalidUpload(
                    f"field is {info.width}x{info.height} but this slide's fields are "
                    f"{other.width}x{other.height}"
                )
            if other.index == upload.index and other.modality == upload.modality:
                raise Conflict(
                    f"field {upload.index} ({upload.modality.value}) of slide {slide.id} "
                    f"is already uploaded as {other.id}"
                )
        return info

    # -- shared -------------------------------------------------------------------------

    def _owned_slide(
        self, session: Session, scanner: Scanner, slide_id: str, *, lock: bool = False
    ) -> Slide:
        query = select(Slide).where(Slide.id == slide_id, Slide.scanner_id == scanner.id)
        slide = session.exec(query.with_for_update() if lock else query).first()
        if slide is None:  # another scanner's slide is as invisible as a missing one
            raise NotFound(f"no slide {slide_id} for this scanner")
        return slide

    def _replay(self, scanner: Scanner, key: str, fingerprint: str) -> Answer | None:
        with Session(self._engine) as session:
            record = session.get(IdempotencyRecord, (scanner.id, key))
        if record is None:
            return None
        if record.fingerprint != fingerprint:
            raise Conflict(f"Idempotency-Key {key!r} was already used for a different request")
        return Answer(record.status_code, dict(record.response))

    def _once(
        self,
        scanner: Scanner,
        key: str | None,
        fingerprint: str,
        action: Callable[[Session], Answer],
    ) -> Answer:
        """Run ``action`` in a transaction that also stores the answer under ``key``."""
        if key is not None and (replay := self._replay(scanner, key, fingerprint)) is not None:
            return replay
        try:
            with session_scope(self._engine) as session:
                answer = action(session)
                if key is not None:
                    session.add(
                        IdempotencyRecord(
                            scanner_id=scanner.id,
                            key=key,
                            fingerprint=fingerprint,
                            status_code=answer.status,
                            response=answer.body,
                        )
                    )
        except IntegrityError:
            if key is not None and (replay := self._replay(scanner, key, fingerprint)) is not None:
                return replay
            raise Conflict("a concurrent request wrote the same record; retry to see it") from None
        return answer


def _original_key(key: str) -> str:
    """Where the upload as sent is kept beside its canonical image (``…/<id>.original``)."""
    return key.rsplit(".", 1)[0] + ".original"


def _require_open(slide: Slide) -> None:
    if slide.status != SlideStatus.OPEN:
        raise Conflict(f"slide {slide.id} is {slide.status}: it takes no more fields")


def _count(session: Session, table: type[Cell] | type[Registration], slide_id: str) -> int:
    return int(
        session.exec(
            select(func.count()).select_from(table).where(table.slide_id == slide_id)
        ).one()
    )


def _slide_body(slide: Slide, *, fields: list[FieldImage]) -> dict[str, Any]:
    return {
        "id": slide.id,
        "external_id": slide.external_id,
        "patient_pseudonym": slide.patient_pseudonym,
        "status": str(slide.status),
        "dic_only": slide.dic_only,
        "acquisition": slide.acquisition,
        "fields": [_field_body(f) for f in fields],
    }


def _field_body(field: FieldImage) -> dict[str, Any]:
    return {
        "id": field.id,
        "slide_id": field.slide_id,
        "index": field.index,
        "modality": str(field.modality),
        "object_key": field.object_key,
        "sha256": field.sha256,
        "size_bytes": field.size_bytes,
        "width": field.width,
        "height": field.height,
        "stage_x_um": field.stage_x_um,
        "stage_y_um": field.stage_y_um,
    }
