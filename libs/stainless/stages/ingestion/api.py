"""HTTP API for scanners: open a slide, upload fields, complete or cancel the slide, read its
status.

Every request carries the scanner's key in ``X-API-Key``; a key reaches only its
own scanner's slides. Retries are safe with an ``Idempotency-Key`` header.

A field is uploaded either as a form (``POST …/fields``: decoded and re-encoded before the
answer) or as the raw body of ``PUT …/fields/{index}/{modality}`` with its SHA-256 in
``X-Content-SHA256``: the bytes go on to the object store while they arrive, and the
answer comes once their length, digest and header are checked (decoding follows, off the
request path).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from queue import SimpleQueue
from typing import Annotated, Any

import anyio
from fastapi import Depends, FastAPI, File, Form, Header, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader
from sqlalchemy import Engine
from sqlmodel import Session

from stainless.core.config import (
    DatabaseSettings,
    IngestionSettings,
    ProcessSettings,
    StoreSettings,
    load_settings,
)
from stainless.core.db.engine import create_db_engine, ping, wait_for_database
from stainless.core.db.models import Modality, Scanner
from stainless.core.http.errors import (
    ErrorBody,
    ServiceError,
    Unauthorized,
    install_error_handlers,
)
from stainless.core.http.guard import BodyLimit, RequestGuard, guarded_caller
from stainless.core.http.headers import SecurityHeaders
from stainless.core.http.params import SlideId
from stainless.core.logs import configure_logging
from stainless.core.observability import add_health_routes
from stainless.core.storage import create_store
from stainless.stages.ingestion.ingestor import (
    SAFE_ID,
    Answer,
    FieldUpload,
    Ingestor,
    SlideRequest,
)
from stainless.stages.ingestion.scanners import authenticate

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "missing, unknown or revoked API key"},
    404: {"model": ErrorBody, "description": "no such slide for this scanner"},
    409: {"model": ErrorBody, "description": "already exists, or slide no longer open"},
    411: {"model": ErrorBody, "description": "a raw upload without Content-Length"},
    413: {"model": ErrorBody, "description": "upload larger than the configured limit"},
    415: {"model": ErrorBody, "description": "a raw upload that is not PNG or TIFF"},
    422: {"description": "invalid request, image, checksum or size"},
}
RAW_TYPES = frozenset({"image/tiff", "image/png", "application/octet-stream"})
SHA256_HEX = r"^[0-9a-fA-F]{64}$"


class LengthRequired(ServiceError):
    status, code = 411, "length_required"


class UnsupportedType(ServiceError):
    status, code = 415, "unsupported_media_type"


_MULTIPART_OVERHEAD = 64 * 1024
STAGE_RANGE_UM = 1e6  # a metre of stage travel either way: far beyond any microscope
_FORM_PARTS = 8  # file, modality, index, stage_x_um, stage_y_um, sha256, and slack
BODY_HIGH_WATER = 4 * 1024 * 1024  # bytes of a raw upload waiting for a slow store, at most

IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", pattern=SAFE_ID, description="Makes a retry safe."),
]


_REFUSED = "missing, unknown or revoked API key"


def _scanner_of(engine: Engine) -> Callable[[str | None], Scanner]:
    """The scanner whose valid, unrevoked key a request presents (checked by the guard,
    before the request's body is read)."""

    def identify(key: str | None) -> Scanner:
        if key:
            with Session(engine) as session:
                scanner = authenticate(session, key)
            if scanner is not None:
                return scanner
        raise Unauthorized(_REFUSED)

    return identify


StageUm = Annotated[
    float | None,
    Form(
        allow_inf_nan=False,
        ge=-STAGE_RANGE_UM,
        le=STAGE_RANGE_UM,
        description="Stage position of the field (µm), finite.",
    ),
]

StageUmQuery = Annotated[
    float | None,
    Query(
        allow_inf_nan=False,
        ge=-STAGE_RANGE_UM,
        le=STAGE_RANGE_UM,
        description="Stage position of the field (µm), finite.",
    ),
]
FieldIndex = Annotated[int, PathParam(ge=0, le=100_000, description="Field index on the slide.")]

_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="The scanner's key.")


async def current_scanner(
    request: Request, _key: Annotated[str | None, Depends(_api_key)]
) -> Scanner:
    """The scanner the guard identified by the request's key (``_key``: in the OpenAPI
    document)."""
    scanner = guarded_caller(request)
    if not isinstance(scanner, Scanner):  # every route is guarded: never reached
        raise Unauthorized(_REFUSED)
    return scanner


ScannerDep = Annotated[Scanner, Depends(current_scanner)]


def _answer(answer: Answer) -> JSONResponse:
    return JSONResponse(answer.body, status_code=answer.status)


class _BodyPump:
    """A request's body handed from the event loop to a worker thread as it arrives.

    The loop reads the body only once the thread asks for its first chunk (a refusal before
    that reads nothing) and then without waiting for the thread, which takes the chunks from
    a queue: no round trip to the loop per chunk. The queue holds at most about
    ``high_water`` bytes: past it the loop stops reading (the client's sending slows with
    it) until the thread has taken the queue down to half.
    """

    def __init__(self, request: Request, *, high_water: int = BODY_HIGH_WATER) -> None:
        self._request = request
        self._high_water = high_water
        self._wanted = anyio.Event()
        self._chunks: SimpleQueue[bytes | BaseException | None] = SimpleQueue()
        self._lock = threading.Lock()
        self._queued = 0  # bytes in the queue
        self._room: anyio.Event | None = None  # set by the thread when the queue has drained

    async def run(self) -> None:
        """Read the body into the queue once it is wanted (cancelled when it is not); a
        failure to read it (a refusal of the guard, a client gone) goes to the thread."""
        await self._wanted.wait()
        try:
            async for chunk in self._request.stream():
                if chunk:
                    await self._put(chunk)
        except Exception as exc:  # noqa: BLE001 - handed on to the thread, raised there
            self._chunks.put(exc)
            return
        self._chunks.put(None)

    async def _put(self, chunk: bytes) -> None:
        with self._lock:
            self._queued += len(chunk)
            self._chunks.put(chunk)
            room = self._room = anyio.Event() if self._queued > self._high_water else None
        if room is not None:
            await room.wait()

    async def feed(self, consume: Callable[[Iterator[bytes]], Answer]) -> Answer:
        """``consume(chunks)``'s answer, run in a worker thread while the body is read."""
        failure: BaseException | None = None
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(self.run)
            try:
                answer = await anyio.to_thread.run_sync(consume, self.chunks())
            except Exception as exc:  # noqa: BLE001 - raised below, not as an exception group
                failure = exc
            tasks.cancel_scope.cancel()  # a body never wanted (a refusal or a replay)
        if failure is not None:
            raise failure
        return answer

    def chunks(self) -> Iterator[bytes]:
        """In the worker thread: the body's chunks, in order."""
        anyio.from_thread.run_sync(self._wanted.set)
        while (item := self._chunks.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            with self._lock:
                self._queued -= len(item)
                room = self._room if self._queued <= self._high_water // 2 else None
                if room is not None:
                    self._room = None
            if room is not None:
                anyio.from_thread.run_sync(room.set)
            yield item


def create_app(settings: IngestionSettings, *, engine: Engine, ingestor: Ingestor) -> FastAPI:
    app = FastAPI(
        title="Stainless ingestion",
        version="1",
        description="Upload API for DIC and brightfield microscope fields.",
        # The document at /openapi.json only: the interactive pages load their scripts from
        # a CDN, which the Content-Security-Policy (and an air-gapped hospital) refuses.
        docs_url=None,
        redoc_url=None,
    )
    upload = BodyLimit(
        "POST",
        r"/v1/slides/[^/]+/fields",
        settings.max_upload_bytes + _MULTIPART_OVERHEAD,
        max_parts=_FORM_PARTS,
    )
    raw = BodyLimit("PUT", r"/v1/slides/[^/]+/fields/[^/]+/[^/]+", settings.max_upload_bytes)
    app.add_middleware(RequestGuard, identify=_scanner_of(engine), limits=[upload, raw])
    app.add_middleware(SecurityHeaders)  # outermost: refusals of the guard carry them too

    install_error_handlers(app)

    @app.post("/v1/slides", status_code=201, responses=_ERRORS, tags=["slides"])
    def open_slide(
        body: SlideRequest, who: ScannerDep, idempotency_key: IdempotencyKey = None
    ) -> JSONResponse:
        """Open a slide; fields are then uploaded to it."""
        return _answer(ingestor.open_slide(who, body, idempotency_key=idempotency_key))

    @app.get("/v1/slides/{slide_id}", responses=_ERRORS, tags=["slides"])
    def slide_status(slide_id: SlideId, who: ScannerDep) -> JSONResponse:
        """The slide, its fields and how far processing has come."""
        return _answer(ingestor.slide_status(who, slide_id))

    @app.post("/v1/slides/{slide_id}/fields", status_code=201, responses=_ERRORS, tags=["fields"])
    def upload_field(
        slide_id: SlideId,
        who: ScannerDep,
        file: Annotated[UploadFile, File(description="PNG or TIFF; DIC 1 channel, BF RGB.")],
        modality: Annotated[Modality, Form()],
        index: Annotated[int, Form(ge=0, le=100_000, description="Field index on the slide.")],
        stage_x_um: StageUm = None,
        stage_y_um: StageUm = None,
        sha256: Annotated[str | None, Form(pattern=r"^[0-9a-fA-F]{64}$")] = None,
        idempotency_key: IdempotencyKey = None,
    ) -> JSONResponse:
        """Upload one field image; it is checked, stored and announced as ``fields.ingested``."""
        upload = FieldUpload(
            slide_id=slide_id,
            index=index,
            modality=modality,
            sha256=sha256,
            stage_x_um=stage_x_um,
            stage_y_um=stage_y_um,
        )
        return _answer(
            ingestor.upload_field(who, upload, file.file, idempotency_key=idempotency_key)
        )

    @app.put(
        "/v1/slides/{slide_id}/fields/{index}/{modality}",
        status_code=201,
        responses=_ERRORS,
        tags=["fields"],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    t: {"schema": {"type": "string", "format": "binary"}} for t in RAW_TYPES
                },
            }
        },
    )
    async def receive_field(
        request: Request,
        slide_id: SlideId,
        index: FieldIndex,
        modality: Modality,
        who: ScannerDep,
        sha256: Annotated[
            str,
            Header(
                alias="X-Content-SHA256",
                pattern=SHA256_HEX,
                description="SHA-256 of the body (hex); the store checks it too.",
            ),
        ],
        stage_x_um: StageUmQuery = None,
        stage_y_um: StageUmQuery = None,
        idempotency_key: IdempotencyKey = None,
    ) -> JSONResponse:
        """Upload one field image as the raw body (PNG or TIFF; DIC 1 channel, BF RGB):
        stored while it arrives, checked, and announced as ``fields.ingested``; it is
        decoded within the memory cap by its first reader. A ``Content-Length`` is required."""
        declared = request.headers.get("content-length")
        if declared is None:
            raise LengthRequired("a raw upload needs a Content-Length (chunked is not taken)")
        media = request.headers.get("content-type", "application/octet-stream")
        if media.split(";")[0].strip().lower() not in RAW_TYPES:
            raise UnsupportedType(f"send image/tiff or image/png, not {media!r}")
        upload = FieldUpload(
            slide_id=slide_id,
            index=index,
            modality=modality,
            sha256=sha256,
            stage_x_um=stage_x_um,
            stage_y_um=stage_y_um,
        )
        answer = await _BodyPump(request).feed(
            lambda chunks: ingestor.receive_field(
                who, upload, chunks, length=int(declared), idempotency_key=idempotency_key
            )
        )
        return _answer(answer)

    @app.post("/v1/slides/{slide_id}/complete", responses=_ERRORS, tags=["slides"])
    def complete_slide(slide_id: SlideId, who: ScannerDep) -> JSONResponse:
        """Mark the slide fully uploaded (repeating it is harmless)."""
        return _answer(ingestor.complete_slide(who, slide_id))

    @app.post("/v1/slides/{slide_id}/cancel", responses=_ERRORS, tags=["slides"])
    def cancel_slide(slide_id: SlideId, who: ScannerDep) -> JSONResponse:
        """Withdraw an open slide: no more fields, no report (repeating it is harmless;
        a completed slide answers 409)."""
        return _answer(ingestor.cancel_slide(who, slide_id))

    add_health_routes(app, lambda: ping(engine), metrics=False)  # /metrics: its own port
    return app


class IngestionServiceSettings(ProcessSettings):
    """What the ingestion service reads: its database, its object store and its own block."""

    database: DatabaseSettings = DatabaseSettings()
    store: StoreSettings = StoreSettings()
    ingestion: IngestionSettings = IngestionSettings()


def build(settings: IngestionServiceSettings, *, engine: Engine | None = None) -> FastAPI:
    """The app with its dependencies built from ``settings`` (the stage's composition root);
    a process that runs several stages (the embedded demo) passes its one engine."""
    if engine is None:
        engine = create_db_engine(settings.database)
        wait_for_database(engine)
    ingestor = Ingestor(engine, create_store(settings.store), settings.ingestion)
    return create_app(settings.ingestion, engine=engine, ingestor=ingestor)


def app_from_environment() -> FastAPI:
    """``uvicorn --factory stainless.stages.ingestion.api:app_from_environment``."""
    settings = load_settings(IngestionServiceSettings)
    configure_logging(settings.log)
    return build(settings)
