"""The Ingestor: open slides, accept field uploads, complete slides — all-or-nothing.

Every check runs before anything is recorded. The image goes to the object store
under a key unique to the upload; the field row and its ``fields.ingested`` event
then commit in one transaction, and if that fails the object is deleted again.
A request sent with an ``Idempotency-Key`` stores its first answer in the same
transaction, and a retry gets that answer back without storing anything twice.

Two ways in: :meth:`Ingestor.upload_field` (a form) decodes the image within the memory
cap and stores its canonical re-encoding before it answers; :meth:`Ingestor.receive_field`
(a raw body) sends the bytes on to the store while they arrive, checks their length,
digest and header, and answers — the field is stored as received (``canonical`` false)
and its first reader decodes it within the same cap, off the request path.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Iterable, Iterator
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
from stainless.core.decoding import CappedDecoder, shared_decoder
from stainless.core.events.contracts import Envelope, SlideCancelled, SlideUploaded
from stainless.core.events.outbox import add_event
from stainless.core.http.errors import Conflict, NotFound, ServiceError, TooLarge
from stainless.core.storage import ObjectIntegrityError, ObjectStore
from stainless.imaging.codecs import ImageInfo, ImageRejected, probe
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
    """Where a field goes and what the scanner says of it (its bytes come apart)."""

    slide_id: str
    index: int
    modality: Modality
    sha256: str | None = None
    stage_x_um: float | None = None
    stage_y_um: float | None = None

    def fingerprint(self, digest: str) -> str:
        return _fingerprint(
            "field",
            self.slide_id,
            self.index,
            self.modality.value,
            digest,
            self.stage_x_um,
            self.stage_y_um,
        )


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
        self,
        scanner: Scanner,
        upload: FieldUpload,
        stream: BinaryIO,
        *,
        idempotency_key: str | None = None,
    ) -> Answer:
        """Check, decode within the cap and store the canonical image, then record it."""
        return _counted(lambda: self._upload_field(scanner, upload, stream, idempotency_key))

    def receive_field(
        self,
        scanner: Scanner,
        upload: FieldUpload,
        chunks: Iterable[bytes],
        *,
        length: int,
        idempotency_key: str | None = None,
    ) -> Answer:
        """Send ``length`` bytes on to the store as ``chunks`` yields them, check their
        digest (``upload.sha256``, required) and header, then record the field as received.
        The slide's own checks and a retry's replay come first, before any byte is read."""
        return _counted(
            lambda: self._receive_field(scanner, upload, chunks, length, idempotency_key)
        )

    def _upload_field(
        self,
        scanner: Scanner,
        upload: FieldUpload,
        stream: BinaryIO,
        idempotency_key: str | None,
    ) -> Answer:
        data = self._read(stream)
        digest = hashlib.sha256(data).hexdigest()
        fingerprint = upload.fingerprint(digest)
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
        stored = _Stored(field_id, key, digest, len(data), info, canonical=True)
        return self._record(scanner, upload, stored, fingerprint, idempotency_key)

    def _receive_field(
        self,
        scanner: Scanner,
        upload: FieldUpload,
        chunks: Iterable[bytes],
        length: int,
        idempotency_key: str | None,
    ) -> Answer:
        if upload.sha256 is None:
            raise InvalidUpload("a raw upload needs its SHA-256 (hex) in X-Content-SHA256")
        if length > self._settings.max_upload_bytes:
            raise TooLarge(f"the upload exceeds {self._settings.max_upload_bytes} bytes")
        digest = upload.sha256.lower()
        fingerprint = upload.fingerprint(digest)
        if idempotency_key is not None:
            replay = self._replay(scanner, idempotency_key, fingerprint)
            if replay is not None:
                return replay
        with Session(self._engine) as session:  # all the slide's checks before the bytes
            slide = self._owned_slide(session, scanner, upload.slide_id)
            self._check_slide(session, slide, upload)
            size = _field_size(session, slide)
        field_id = new_id()
        key = f"{self._settings.raw_prefix}/{slide.id}/{field_id}{RECEIVED_SUFFIX}"
        inspected = _Inspected(chunks, lambda info: self._check_image(upload, info, size))
        try:
            try:
                self._store.put_stream(key, inspected, length=length, sha256=digest)
            except ObjectIntegrityError as exc:
                raise ChecksumMismatch(str(exc)) from None
            info = inspected.info()
        except BaseException:
            self._store.delete(key)  # a write cut short stored nothing; a whole one goes
            raise
        stored = _Stored(field_id, key, digest, length, info, canonical=False)
        return self._record(scanner, upload, stored, fingerprint, idempotency_key)

    def _record(
        self,
        scanner: Scanner,
        upload: FieldUpload,
        stored: _Stored,
        fingerprint: str,
        idempotency_key: str | None,
    ) -> Answer:
        """Record the stored field and announce it, or delete its objects again."""
        slide_id = upload.slide_id

        def action(session: Session) -> Answer:
            # The slide row is locked until commit: completing it waits for this field, or
            # this field sees it completed (the check above ran before the image was stored).
            locked = self._owned_slide(session, scanner, slide_id, lock=True)
            _require_open(locked)
            # again under the lock: two first fields of one slide may have passed side by side
            _require_size(stored.info, _field_size(session, locked))
            field = record_field(
                session,
                field_id=stored.field_id,
                slide_id=slide_id,
                index=upload.index,
                modality=upload.modality,
                object_key=stored.key,
                canonical=stored.canonical,
                sha256=stored.digest,
                size_bytes=stored.size,
                width=stored.info.width,
                height=stored.info.height,
                stage_x_um=upload.stage_x_um,
                stage_y_um=upload.stage_y_um,
            )
            return Answer(201, _field_body(field))

        try:
            answer = self._once(scanner, idempotency_key, fingerprint, action)
        except BaseException:
            self._delete_objects(stored.key)
            raise
        if answer.body.get("object_key") != stored.key:  # a concurrent retry won: ours is surplus
            self._delete_objects(stored.key)
        else:
            UPLOAD_BYTES.inc(stored.size)
            log.info(
                "field ingested",
                slide_id=slide_id,
                index=upload.index,
                modality=upload.modality.value,
                bytes=stored.size,
                canonical=stored.canonical,
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

    def _check_slide(self, session: Session, slide: Slide, upload: FieldUpload) -> None:
        """What the slide allows, before any of the image is read."""
        _require_open(slide)
        if slide.dic_only and upload.modality is Modality.BF:
            raise InvalidUpload(f"slide {slide.id} was opened as DIC-only")
        taken = session.exec(
            select(FieldImage.id).where(
                FieldImage.slide_id == slide.id,
                FieldImage.index == upload.index,
                FieldImage.modality == upload.modality,
            )
        ).first()
        if taken is not None:
            raise Conflict(_taken(slide, upload, taken))

    def _check_header(
        self, session: Session, slide: Slide, upload: FieldUpload, data: bytes
    ) -> ImageInfo:
        self._check_slide(session, slide, upload)
        return self._check_image(upload, _probed(data), _field_size(session, slide))

    def _check_image(
        self, upload: FieldUpload, info: ImageInfo, size: tuple[int, int] | None
    ) -> ImageInfo:
        """The header's image against the limits, the modality and ``size``, that of the
        slide's fields (None before its first; what the slide allows is checked apart,
        :meth:`_check_slide`)."""
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
        _require_size(info, size)
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


RECEIVED_SUFFIX = ".received"
"""Key suffix of an upload stored as it arrived, until its first reader replaces it."""


@dataclass(frozen=True)
class _Stored:
    """An upload's object in the store, before its row is recorded."""

    field_id: str
    key: str
    digest: str
    size: int
    info: ImageInfo
    canonical: bool


def _counted(upload: Callable[[], Answer]) -> Answer:
    """An upload's answer, counted by outcome."""
    try:
        answer = upload()
    except ServiceError as exc:
        UPLOADS.labels(exc.code).inc()
        raise
    UPLOADS.labels("accepted" if answer.status == 201 else "replayed").inc()
    return answer


class _Inspected:
    """An upload's chunks passed on while its header is checked: as soon as the first
    ``HEAD_BYTES`` have arrived (most headers lie there, and a refusal then cuts the write
    short), else from the whole upload once it is in. Only what the check may still need is
    kept (copying megabytes costs as much as sending them)."""

    HEAD_BYTES = 64 * 1024

    def __init__(self, chunks: Iterable[bytes], check: Callable[[ImageInfo], ImageInfo]) -> None:
        self._chunks = chunks
        self._check = check
        self._kept: list[bytes] = []
        self._kept_bytes = 0
        self._info: ImageInfo | None = None

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            if self._info is None:
                self._keep(chunk)
            yield chunk

    def _keep(self, chunk: bytes) -> None:
        self._kept.append(chunk)
        self._kept_bytes += len(chunk)
        if self._kept_bytes >= self.HEAD_BYTES:
            try:
                head = probe(io.BytesIO(b"".join(self._kept)))
            except ImageRejected:
                return  # the header may lie further in: probed again on the whole
            self._info = self._check(head)  # a refusal cuts the write short
            self._kept.clear()

    def info(self) -> ImageInfo:
        """The checked header (from the whole upload if its head did not do).

        Raises:
            InvalidUpload, Conflict: the check's refusal.
        """
        if self._info is None:
            self._info = self._check(_probed(b"".join(self._kept)))
        return self._info


def _probed(data: bytes) -> ImageInfo:
    try:
        return probe(io.BytesIO(data))
    except ImageRejected as exc:
        raise InvalidUpload(str(exc)) from None


def _field_size(session: Session, slide: Slide) -> tuple[int, int] | None:
    """The width and height of the slide's fields (each has the size of its first)."""
    size = session.exec(
        select(FieldImage.width, FieldImage.height).where(FieldImage.slide_id == slide.id).limit(1)
    ).first()
    return None if size is None else (size[0], size[1])


def _require_size(info: ImageInfo, size: tuple[int, int] | None) -> None:
    """Refuse an image whose size is not ``size``, that of the slide's fields (if any yet)."""
    if size is not None and size != (info.width, info.height):
        raise InvalidUpload(
            f"field is {info.width}x{info.height} but this slide's fields are {size[0]}x{size[1]}"
        )


def _taken(slide: Slide, upload: FieldUpload, field_id: str) -> str:
    return (
        f"field {upload.index} ({upload.modality.value}) of slide {slide.id} "
        f"is already uploaded as {field_id}"
    )


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
        "canonical": field.canonical,
        "sha256": field.sha256,
        "size_bytes": field.size_bytes,
        "width": field.width,
        "height": field.height,
        "stage_x_um": field.stage_x_um,
        "stage_y_um": field.stage_y_um,
    }
