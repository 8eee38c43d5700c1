"""HTTP API for scanners: open a slide, upload fields, complete the slide, read its status.

Every request carries the scanner's key in ``X-API-Key``; a key reaches only its
own scanner's slides. Retries are safe with an ``Idempotency-Key`` header.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, FastAPI, File, Form, Header, Request, UploadFile
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader
from sqlalchemy import Engine
from sqlmodel import Session
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.responses import Response

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
    Unauthorized,
    error_response,
    install_error_handlers,
)
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
    413: {"model": ErrorBody, "description": "upload larger than the configured limit"},
    422: {"description": "invalid request, image, checksum or size"},
}
_MULTIPART_OVERHEAD = 64 * 1024

IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", pattern=SAFE_ID, description="Makes a retry safe."),
]


class _UploadLimit(BaseHTTPMiddleware):
    """Refuse a body whose declared length is over the limit before reading it."""

    def __init__(self, app: Any, limit: int) -> None:
        super().__init__(app)
        self._limit = limit

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > self._limit + _MULTIPART_OVERHEAD:
            detail = f"the request body exceeds {self._limit} bytes"
            return error_response(413, "too_large", detail)
        return await call_next(request)


_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="The scanner's key.")


def current_scanner(request: Request, key: Annotated[str | None, Depends(_api_key)]) -> Scanner:
    """The scanner whose valid, unrevoked key the request carries."""
    if key:
        with Session(request.app.state.engine) as session:
            found = authenticate(session, key)
        if found is not None:
            return found
    raise Unauthorized("missing, unknown or revoked API key")


ScannerDep = Annotated[Scanner, Depends(current_scanner)]


def _answer(answer: Answer) -> JSONResponse:
    return JSONResponse(answer.body, status_code=answer.status)


def create_app(settings: IngestionSettings, *, engine: Engine, ingestor: Ingestor) -> FastAPI:
    app = FastAPI(
        title="Stainless ingestion",
        version="1",
        description="Upload API for DIC and brightfield microscope fields.",
    )
    app.add_middleware(_UploadLimit, limit=settings.max_upload_bytes)
    app.state.engine = engine

    install_error_handlers(app)

    @app.post("/v1/slides", status_code=201, responses=_ERRORS, tags=["slides"])
    def open_slide(
        body: SlideRequest, who: ScannerDep, idempotency_key: IdempotencyKey = None
    ) -> JSONResponse:
        """Open a slide; fields are then uploaded to it."""
        return _answer(ingestor.open_slide(who, body, idempotency_key=idempotency_key))

    @app.get("/v1/slides/{slide_id}", responses=_ERRORS, tags=["slides"])
    def slide_status(slide_id: str, who: ScannerDep) -> JSONResponse:
        """The slide, its fields and how far processing has come."""
        return _answer(ingestor.slide_status(who, slide_id))

    @app.post("/v1/slides/{slide_id}/fields", status_code=201, responses=_ERRORS, tags=["fields"])
    def upload_field(
        slide_id: str,
        who: ScannerDep,
        file: Annotated[UploadFile, File(description="PNG or TIFF; DIC 1 channel, BF RGB.")],
        modality: Annotated[Modality, Form()],
        index: Annotated[int, Form(ge=0, le=100_000, description="Field index on the slide.")],
        stage_x_um: Annotated[float | None, Form()] = None,
        stage_y_um: Annotated[float | None, Form()] = None,
        sha256: Annotated[str | None, Form(pattern=r"^[0-9a-fA-F]{64}$")] = None,
        idempotency_key: IdempotencyKey = None,
    ) -> JSONResponse:
        """Upload one field image; it is checked, stored and announced as ``fields.ingested``."""
        upload = FieldUpload(
            slide_id=slide_id,
            index=index,
            modality=modality,
            stream=file.file,
            sha256=sha256,
            stage_x_um=stage_x_um,
            stage_y_um=stage_y_um,
        )
        return _answer(ingestor.upload_field(who, upload, idempotency_key=idempotency_key))

    @app.post("/v1/slides/{slide_id}/complete", responses=_ERRORS, tags=["slides"])
    def complete_slide(slide_id: str, who: ScannerDep) -> JSONResponse:
        """Mark the slide fully uploaded (repeating it is harmless)."""
        return _answer(ingestor.complete_slide(who, slide_id))

    add_health_routes(app, lambda: ping(engine))
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
