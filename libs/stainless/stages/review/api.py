"""HTTP API of the results service and the review page it serves.

Reading needs any role, reviewing and signing need ``reviewer`` (or ``admin``);
see :mod:`stainless.core.http.auth`. Errors are JSON ``{error, detail}``. Routes
only translate: reads are in :mod:`~stainless.stages.review.queries`, writes (each its
own transaction) in :mod:`~stainless.stages.review.reviews`.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import cv2
import numpy as np
from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Engine
from starlette.responses import Response

from stainless.core.audit import audit_trail, record_audit
from stainless.core.config import ClinicalSettings, ResultsSettings
from stainless.core.db.cells import CellView
from stainless.core.db.engine import ping
from stainless.core.http.auth import Admin, Authenticator, Reader, Reviewer, Signer, actor
from stainless.core.http.errors import ErrorBody, NotFound, install_error_handlers
from stainless.core.http.guard import RequestGuard
from stainless.core.http.headers import SecurityHeaders
from stainless.core.http.oidc import issuer_origin
from stainless.core.http.params import CellId, SlideId
from stainless.core.observability import add_health_routes
from stainless.core.storage import ObjectStore
from stainless.core.storage.base import ObjectNotFoundError
from stainless.domain.differential import ClinicalRules
from stainless.domain.review import ReviewAction, ReviewStatus
from stainless.imaging.codecs import encode_png
from stainless.stages.review import queries, reviews
from stainless.stages.review.schemas import (
    AuditEventOut,
    AuthConfigOut,
    CellDetailOut,
    CellOut,
    MeOut,
    ReviewOut,
    SlideRowOut,
    SlideSummaryOut,
)
from stainless.stages.review.study_routes import studies_router, study_page_router

WEB = Path(__file__).parent / "web"
FHIR_JSON = "application/fhir+json"
AUTH_CONFIG = "/v1/auth/config"


_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "missing or unknown API key, or token not valid"},
    403: {"model": ErrorBody, "description": "the caller's role may not do this"},
    404: {"model": ErrorBody, "description": "no such slide, cell or image"},
    422: {"model": ErrorBody, "description": "invalid id, class or request"},
    503: {"model": ErrorBody, "description": "the identity provider cannot be reached"},
}
_WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    409: {"model": ErrorBody, "description": "slide signed, not completed, or cells unreviewed"},
}


class ImageKind(StrEnum):
    DIC = "dic"
    STAINED = "stained"
    HEATMAP = "heatmap"
    BRIGHTFIELD = "brightfield"


class ReviewBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: ReviewAction
    new_class: str | None = Field(default=None, max_length=16, description="A class code.")


def _image_keys(view: CellView) -> dict[ImageKind, str | None]:
    prediction = view.prediction
    return {
        ImageKind.STAINED: prediction.stain_key if prediction else None,
        ImageKind.DIC: view.cell.dic_crop_key,
        ImageKind.HEATMAP: prediction.heatmap_key if prediction else None,
        ImageKind.BRIGHTFIELD: view.cell.bf_crop_key,
    }


def _images(view: CellView) -> dict[str, str]:
    return {
        kind.value: f"/v1/cells/{view.cell.id}/images/{kind.value}.png"
        for kind, key in _image_keys(view).items()
        if key
    }


def display_png(data: bytes) -> bytes:
    """A DIC crop (16- or 8-bit grayscale) as an 8-bit PNG stretched between its 1st and 99th
    percentiles, so the relief is visible whatever the camera's range."""
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ValueError("the DIC crop is not a decodable image")
    pixels = image.astype(np.float32)
    low, high = np.percentile(pixels, [1.0, 99.0])
    if high <= low:
        high = low + 1.0
    stretched = np.clip((pixels - low) * (255.0 / (high - low)), 0, 255)
    return encode_png(stretched.astype(np.uint8))


def _slides_router(engine: Engine, rules: ClinicalRules) -> APIRouter:
    router = APIRouter(prefix="/v1/slides", tags=["slides"], responses=_ERRORS)

    def summary(slide_id: str) -> SlideSummaryOut:
        found = queries.slide_summary(engine, slide_id=slide_id, rules=rules)
        return SlideSummaryOut.of(found)

    @router.get("")
    def list_slides(request: Request, who: Reader) -> list[SlideRowOut]:
        """Every slide, newest first, with its status and cell counts."""
        rows = [SlideRowOut.of(row) for row in queries.list_slides(engine)]
        record_audit(engine, actor(request, who), "read", "slides", {"count": len(rows)})
        return rows

    @router.get("/{slide_id}")
    def slide_detail(slide_id: SlideId, request: Request, who: Reader) -> SlideSummaryOut:
        """Status, differential (counts and percent of leukocytes), flags and signature."""
        found = summary(slide_id)
        record_audit(engine, actor(request, who), "read", f"slide:{slide_id}")
        return found

    @router.get("/{slide_id}/cells", tags=["cells"])
    def slide_cells(
        slide_id: SlideId,
        request: Request,
        who: Reader,
        cell_class: Annotated[
            str | None, Query(alias="class", max_length=16, description="Effective class.")
        ] = None,
        review_status: ReviewStatus | None = None,
    ) -> list[CellOut]:
        """The slide's cells in field order, optionally of one class or review status."""
        views = queries.slide_cells(
            engine, slide_id=slide_id, cell_class=cell_class, review_status=review_status
        )
        record_audit(engine, actor(request, who), "read", f"slide:{slide_id}:cells")
        return [CellOut.of(view, _images(view)) for view in views]

    @router.post("/{slide_id}/sign", responses=_WRITE_ERRORS, tags=["review"])
    def sign(slide_id: SlideId, request: Request, who: Signer) -> SlideSummaryOut:
        """Sign a completed slide whose cells are all reviewed (a reviewer's own act, not an
        admin's); its report becomes final and is stored with its SHA-256."""
        reviews.sign_slide(
            engine,
            slide_id=slide_id,
            signer=who.name,
            rules=rules,
            actor=actor(request, who),
        )
        return summary(slide_id)

    @router.get(
        "/{slide_id}/fhir",
        responses={200: {"content": {FHIR_JSON: {}}, "description": "A DiagnosticReport"}},
        response_class=Response,
    )
    def fhir_report(slide_id: SlideId, request: Request, who: Reader) -> Response:
        """The differential as a FHIR R4 DiagnosticReport: ``preliminary`` until signed, then
        the report as signed, byte for byte, with its SHA-256 as the ``ETag``."""
        record_audit(engine, actor(request, who), "read", f"slide:{slide_id}:fhir")
        body, sha256 = queries.fhir_report(engine, slide_id=slide_id, rules=rules)
        headers = {} if sha256 is None else {"ETag": f'"{sha256}"'}
        return Response(body, media_type=FHIR_JSON, headers=headers)

    return router


def _audit_router(engine: Engine) -> APIRouter:
    router = APIRouter(prefix="/v1/audit", tags=["audit"], responses=_ERRORS)

    @router.get("")
    def audit(
        _: Admin,
        limit: Annotated[int, Query(ge=1, le=1000, description="Newest events first.")] = 100,
        actor_name: Annotated[str | None, Query(alias="actor", max_length=128)] = None,
        action: Annotated[str | None, Query(max_length=64)] = None,
        target: Annotated[str | None, Query(max_length=256)] = None,
    ) -> list[AuditEventOut]:
        """The audit trail (admin): reads of patient data, reviews, signatures, training
        requests, promotions and key changes — who, what, when, from where."""
        events = audit_trail(engine, limit=limit, actor=actor_name, action=action, target=target)
        return [AuditEventOut.of(event) for event in events]

    return router


def _cells_router(engine: Engine, store: ObjectStore) -> APIRouter:
    router = APIRouter(prefix="/v1/cells", tags=["cells"], responses=_ERRORS)

    @router.get("/{cell_id}")
    def cell_detail(cell_id: CellId, request: Request, who: Reader) -> CellDetailOut:
        """Class, probabilities, δ (``confidence``), γ (``uncertainty``), review and images."""
        view = queries.cell_view(engine, cell_id=cell_id)
        record_audit(engine, actor(request, who), "read", f"cell:{cell_id}")
        return CellDetailOut.of(view, _images(view))

    @router.get(
        "/{cell_id}/images/{kind}.png",
        responses={200: {"content": {"image/png": {}}}},
        response_class=Response,
    )
    def cell_image(cell_id: CellId, kind: ImageKind, request: Request, who: Reader) -> Response:
        """The stained crop, the DIC original (contrast-stretched), the heat map or brightfield."""
        view = queries.cell_view(engine, cell_id=cell_id)
        key = _image_keys(view)[kind]
        if not key:
            raise NotFound(f"cell {cell_id} has no {kind.value} image")
        try:
            data = store.get(key)
        except ObjectNotFoundError:
            raise NotFound(f"the {kind.value} image of cell {cell_id} is missing") from None
        if kind is ImageKind.DIC:
            data = display_png(data)
        record_audit(engine, actor(request, who), "read", f"cell:{cell_id}:{kind.value}")
        return Response(data, media_type="image/png", headers={"Cache-Control": "private"})

    @router.post("/{cell_id}/reviews", status_code=201, responses=_WRITE_ERRORS, tags=["review"])
    def review(cell_id: CellId, body: ReviewBody, request: Request, who: Reviewer) -> ReviewOut:
        """Confirm, reclassify (``new_class``) or mark the cell poor quality."""
        recorded = reviews.review_cell(
            engine,
            cell_id=cell_id,
            action=body.action,
            new_class=body.new_class,
            reviewer=who.name,
            actor=actor(request, who),
        )
        return ReviewOut(
            review_id=recorded.review.id,
            cell_id=cell_id,
            slide_id=recorded.slide_id,
            action=body.action.value,
            new_class=recorded.review.new_class,
            cell_class=recorded.effective_class,
            review_status=recorded.review_status.value,
            reviewer=who.name,
        )

    return router


def _pages_router() -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/")
    def index_page() -> FileResponse:
        return FileResponse(WEB / "index.html", media_type="text/html")

    @router.get("/slides/{slide_id}")
    def slide_page(slide_id: SlideId) -> FileResponse:
        return FileResponse(WEB / "slide.html", media_type="text/html")

    return router


def create_app(
    settings: ResultsSettings, clinical: ClinicalSettings, *, engine: Engine, store: ObjectStore
) -> FastAPI:
    """The results API (a router per resource), the review page and the health routes."""
    app = FastAPI(
        title="Stainless results",
        version="1",
        description="WBC differentials, expert review, signing and FHIR reports, blinded "
        "validation studies; the review and study pages.",
        # The document at /openapi.json only: the interactive pages load their scripts from
        # a CDN, which the Content-Security-Policy (and an air-gapped hospital) refuses.
        docs_url=None,
        redoc_url=None,
    )
    app.state.engine = engine
    authenticator = Authenticator(engine, settings)
    app.state.authenticator = authenticator
    app.add_middleware(RequestGuard, identify=authenticator.identify, public={AUTH_CONFIG})
    # Outermost: refusals of the guard carry them too. The page fetches from the provider.
    provider = (issuer_origin(settings.oidc_issuer),) if settings.oidc_issuer else ()
    app.add_middleware(SecurityHeaders, connect_src=provider)
    install_error_handlers(app)
    auth_config = AuthConfigOut.of(settings)

    @app.get(AUTH_CONFIG, tags=["auth"])
    def sign_in_options() -> AuthConfigOut:
        """How to sign in (no key needed): the identity provider of the review page, if any."""
        return auth_config

    @app.get("/v1/me", responses=_ERRORS, tags=["auth"])
    def me(who: Reader) -> MeOut:
        """The name and roles of the caller (a key's holder or a signed-in user)."""
        return MeOut(name=who.name, role=who.role)

    app.include_router(_slides_router(engine, clinical.rules()))
    app.include_router(_cells_router(engine, store))
    app.include_router(_audit_router(engine))
    app.include_router(studies_router(engine, store))
    app.include_router(_pages_router())
    app.include_router(study_page_router(WEB))
    app.mount("/static", StaticFiles(directory=WEB), name="static")
    add_health_routes(app, lambda: ping(engine), metrics=False)  # /metrics: its own port
    return app
