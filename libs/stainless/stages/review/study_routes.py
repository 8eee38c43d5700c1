"""HTTP routes of validation studies and the study page.

A study lead (``scientist`` or ``admin``) draws a study and reads its report; an expert
(``reviewer``) reads only their own view of it: item ids in the expert's order, the
stained images, the study's classes and their own labels, never the reference, the
prediction, the cell behind an item or another expert's labels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, HTMLResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Engine
from starlette.responses import Response

from stainless.core.audit import record_audit
from stainless.core.db.models import Study
from stainless.core.http.auth import (
    READ_ROLES,
    REVIEW_ROLES,
    SCIENCE_ROLES,
    Principal,
    actor,
    require,
)
from stainless.core.http.errors import ErrorBody, NotFound
from stainless.core.http.params import UUID_PATTERN
from stainless.core.storage import ObjectStore
from stainless.core.storage.base import ObjectNotFoundError
from stainless.domain.study import POOR_QUALITY
from stainless.domain.vocabulary import vocabulary_of
from stainless.stages.review import study
from stainless.stages.review.study_report import StudyReport, study_html, study_report

__all__ = ["studies_router", "study_page_router"]

StudyId = Annotated[str, PathParam(pattern=UUID_PATTERN, description="A study id.")]
ItemId = Annotated[str, PathParam(pattern=UUID_PATTERN, description="A study item id.")]

Lead = Annotated[
    Principal, Depends(require(SCIENCE_ROLES, doing="drawing a study or reading its report"))
]
Expert = Annotated[Principal, Depends(require(REVIEW_ROLES, doing="labelling study cells"))]
Reader = Annotated[Principal, Depends(require(READ_ROLES, doing="listing studies"))]

REPORT_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
"""The report page's own policy: its inline style and figure, and nothing else (no script)."""

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "missing or unknown API key, or token not valid"},
    403: {"model": ErrorBody, "description": "the caller's role may not do this"},
    404: {"model": ErrorBody, "description": "no such study, item or slide"},
    409: {"model": ErrorBody, "description": "a study of that name exists"},
    422: {"model": ErrorBody, "description": "invalid id, label or request"},
}


class StudyBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128, pattern=r"^[\w .:-]+$")
    slide_ids: list[Annotated[str, Field(pattern=UUID_PATTERN)]] = Field(min_length=1)
    cells: int = Field(ge=1, le=10_000, description="How many cells to draw.")
    seed: int = Field(default=0, ge=0, le=2**31 - 1)


class ClassOut(BaseModel):
    code: str
    name: str


class StudyOut(BaseModel):
    id: str
    name: str
    vocabulary: str
    classes: list[ClassOut] = Field(description="What an expert may answer, PQ last.")
    reference: str = Field(description="Where the reference classes come from.")
    created_by: str
    created_at: str
    items: int
    labelled: dict[str, int] = Field(description="Items each expert has labelled.")

    @classmethod
    def of(cls, row: study.StudyRow) -> StudyOut:
        return cls(
            id=row.study.id,
            name=row.study.name,
            vocabulary=row.study.vocabulary,
            classes=_classes(row.study),
            reference=row.study.reference,
            created_by=row.study.created_by,
            created_at=row.study.created_at.isoformat(),
            items=row.items,
            labelled=row.labelled,
        )


class DrawnOut(StudyOut):
    left_out: dict[str, int] = Field(description="Cells not drawable, by reason.")


class ItemOut(BaseModel):
    id: str
    image: str = Field(description="The stained image (PNG).")
    label: str | None = Field(description="The caller's own label, if any.")


class ExpertStudyOut(BaseModel):
    """A study as one expert sees it: the items in the expert's order."""

    id: str
    name: str
    expert: str
    classes: list[ClassOut]
    items: list[ItemOut]
    labelled: int


class LabelBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label: str = Field(max_length=16, description="A class code of the study, or PQ.")


class LabelOut(BaseModel):
    item_id: str
    expert: str
    label: str


class RaterOut(BaseModel):
    name: str
    automatic: bool
    cells: int
    accuracy: float
    macro_f1: float
    poor_quality: float
    recall: dict[str, float | None]
    confusion: dict[str, dict[str, int]] = Field(description="reference → label → count")


class AgreementOut(BaseModel):
    first: str
    second: str
    cells: int
    kappa: float | None


class StudyReportOut(BaseModel):
    name: str
    vocabulary: str
    reference: str
    cells: int
    poor_quality: float | None = Field(description="Share of the experts' labels that are PQ.")
    raters: list[RaterOut]
    agreements: list[AgreementOut]

    @classmethod
    def of(cls, report: StudyReport) -> StudyReportOut:
        return cls(
            name=report.name,
            vocabulary=report.vocabulary,
            reference=report.reference,
            cells=len(report.references),
            poor_quality=report.poor_quality,
            raters=[
                RaterOut(
                    name=r.name,
                    automatic=r.automatic,
                    cells=r.summary.cells,
                    accuracy=r.summary.accuracy,
                    macro_f1=r.summary.macro_f1,
                    poor_quality=r.summary.poor_quality,
                    recall=r.summary.recall,
                    confusion={code: r.matrix[code] for code in report.present},
                )
                for r in report.raters
            ],
            agreements=[AgreementOut(**a.__dict__) for a in report.agreements],
        )


def _classes(found: Study) -> list[ClassOut]:
    names = vocabulary_of(found.vocabulary).names
    return [ClassOut(code=code, name=names[code]) for code in found.classes] + [
        ClassOut(code=POOR_QUALITY, name="poor quality")
    ]


def _image(study_id: str, item_id: str) -> str:
    return f"/v1/studies/{study_id}/items/{item_id}/image.png"


def studies_router(engine: Engine, store: ObjectStore) -> APIRouter:
    router = APIRouter(prefix="/v1/studies", tags=["studies"], responses=_ERRORS)

    @router.post("", status_code=201)
    def create(body: StudyBody, request: Request, who: Lead) -> DrawnOut:
        """Draw a blinded study: ``cells`` stained cells of the slides, stratified by their
        reference class (the phantom's ground truth)."""
        drawn = study.create_study(
            engine,
            name=body.name,
            slide_ids=body.slide_ids,
            cells=body.cells,
            seed=body.seed,
            actor=actor(request, who),
        )
        return DrawnOut(
            **StudyOut.of(study.study_row(engine, study_id=drawn.study.id)).model_dump(),
            left_out=drawn.left_out,
        )

    @router.get("")
    def list_all(who: Reader) -> list[StudyOut]:
        """Every study with each expert's progress, newest first."""
        return [StudyOut.of(found) for found in study.list_studies(engine)]

    @router.get("/{study_id}/items")
    def items(study_id: StudyId, request: Request, who: Expert) -> ExpertStudyOut:
        """The caller's view of the study: items in the caller's own order, with the
        caller's labels so far."""
        mine = study.expert_items(engine, study_id=study_id, expert=who.name)
        record_audit(engine, actor(request, who), "read", f"study:{study_id}:items")
        return ExpertStudyOut(
            id=mine.study.id,
            name=mine.study.name,
            expert=who.name,
            classes=_classes(mine.study),
            items=[
                ItemOut(id=item, image=_image(study_id, item), label=mine.labels.get(item))
                for item in mine.item_ids
            ],
            labelled=len(mine.labels),
        )

    @router.get(
        "/{study_id}/items/{item_id}/image.png",
        responses={200: {"content": {"image/png": {}}}},
        response_class=Response,
    )
    def image(study_id: StudyId, item_id: ItemId, request: Request, who: Expert) -> Response:
        """The stained image of an item."""
        key = study.item_stain_key(engine, study_id=study_id, item_id=item_id)
        try:
            data = store.get(key)
        except ObjectNotFoundError:
            raise NotFound(f"the image of item {item_id} is missing") from None
        record_audit(engine, actor(request, who), "read", f"study:{study_id}:{item_id}")
        return Response(data, media_type="image/png", headers={"Cache-Control": "private"})

    @router.put("/{study_id}/items/{item_id}/label")
    def label(
        study_id: StudyId, item_id: ItemId, body: LabelBody, request: Request, who: Expert
    ) -> LabelOut:
        """Label an item (a class of the study or PQ); labelling it again replaces the label."""
        saved = study.label_item(
            engine,
            study_id=study_id,
            item_id=item_id,
            expert=who.name,
            label=body.label,
            actor=actor(request, who),
        )
        return LabelOut(item_id=item_id, expert=who.name, label=saved.label)

    @router.get("/{study_id}/report")
    def report(study_id: StudyId, request: Request, who: Lead) -> StudyReportOut:
        """Accuracy, macro-F1, recall, confusion and κ of every expert and the automatic
        classifier against the reference."""
        found = study_report(study.study_labels(engine, study_id=study_id))
        record_audit(engine, actor(request, who), "read", f"study:{study_id}:report")
        return StudyReportOut.of(found)

    @router.get("/{study_id}/report.html", response_class=HTMLResponse)
    def report_page(study_id: StudyId, request: Request, who: Lead) -> HTMLResponse:
        """The report as a page, laid out as thesis Tables 8.3–8.6."""
        found = study_report(study.study_labels(engine, study_id=study_id))
        record_audit(engine, actor(request, who), "read", f"study:{study_id}:report")
        return HTMLResponse(study_html(found), headers={"Content-Security-Policy": REPORT_CSP})

    return router


def study_page_router(web: Path) -> APIRouter:
    """The page an expert labels a study on (``/studies/{id}``)."""
    router = APIRouter(include_in_schema=False)

    @router.get("/studies/{study_id}")
    def study_page(study_id: StudyId) -> FileResponse:
        return FileResponse(web / "study.html", media_type="text/html")

    return router
