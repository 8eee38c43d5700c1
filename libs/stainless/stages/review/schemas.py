"""The bodies the results API answers with, so that its OpenAPI documents every one.

A cell's class is ``class`` in JSON (``cell_class`` in Python).
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from stainless.core.config import ResultsSettings
from stainless.core.db.cells import CellView
from stainless.core.db.models import AuditEvent, Slide
from stainless.domain.review import ReviewAction
from stainless.domain.vocabulary import vocabulary_of
from stainless.stages.review.queries import SlideRow, SlideSummary

__all__ = [
    "AuditEventOut",
    "AuthConfigOut",
    "BoxOut",
    "CellDetailOut",
    "CellOut",
    "DifferentialOut",
    "FlagsOut",
    "LatestReviewOut",
    "MeOut",
    "OidcOut",
    "ReviewOut",
    "SlideOut",
    "SlideRowOut",
    "SlideSummaryOut",
]


def _when(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).isoformat()


class AuditEventOut(BaseModel):
    """One audit event: who read or did what, to what, when and from where."""

    id: int
    at: str | None
    actor: str
    role: str
    action: str = Field(description="read, review, sign, train, promote, rollback, key-…")
    target: str = Field(description="kind:id, e.g. slide:<uuid>")
    client: str | None = Field(description="The client's address, when known.")
    detail: dict[str, object]

    @classmethod
    def of(cls, event: AuditEvent) -> AuditEventOut:
        return cls(
            id=event.id or 0,
            at=_when(event.at),
            actor=event.actor,
            role=event.role,
            action=event.action,
            target=event.target,
            client=event.client,
            detail=dict(event.detail or {}),
        )


class MeOut(BaseModel):
    name: str
    role: str = Field(description="The caller's roles, e.g. reviewer or reviewer+admin.")


class OidcOut(BaseModel):
    """What the review page needs to sign a user in at the identity provider."""

    issuer: str
    client_id: str
    scopes: str


class AuthConfigOut(BaseModel):
    """How the review page may sign in: an API key always, the identity provider if set."""

    oidc: OidcOut | None = Field(description="None: API keys only.")

    @classmethod
    def of(cls, settings: ResultsSettings) -> AuthConfigOut:
        if not (settings.oidc_issuer and settings.oidc_client_id):
            return cls(oidc=None)
        return cls(
            oidc=OidcOut(
                issuer=settings.oidc_issuer,
                client_id=settings.oidc_client_id,
                scopes=settings.oidc_scopes,
            )
        )


class SlideOut(BaseModel):
    id: str
    external_id: str
    patient_pseudonym: str
    status: str
    created_at: str | None
    signed_by: str | None
    signed_at: str | None

    @classmethod
    def slide_fields(cls, slide: Slide) -> dict[str, object]:
        return {
            "id": slide.id,
            "external_id": slide.external_id,
            "patient_pseudonym": slide.patient_pseudonym,
            "status": slide.status.value,
            "created_at": _when(slide.created_at),
            "signed_by": slide.signed_by,
            "signed_at": _when(slide.signed_at),
        }


class SlideRowOut(SlideOut):
    """A slide in the list, with its cell counts."""

    cells: int
    needs_review: int
    pending: int

    @classmethod
    def of(cls, row: SlideRow) -> SlideRowOut:
        return cls.model_validate(
            {
                **cls.slide_fields(row.slide),
                "cells": row.cells,
                "needs_review": row.needs_review,
                "pending": row.pending,
            }
        )


class DifferentialOut(BaseModel):
    counts: dict[str, int] = Field(description="Cells per class, every class included.")
    percent: dict[str, float | None] = Field(description="Percent of leukocytes per class.")
    percent_interval: dict[str, tuple[float, float] | None] = Field(
        description="95% interval of each percentage (Wilson), for the count's size."
    )
    per_100_leukocytes: dict[str, float | None] = Field(
        description="Classes counted per 100 leukocytes (erythroblasts), not in the percent."
    )
    leukocytes: int
    counted: int
    poor_quality: int
    pending: int


class AbnormalOut(BaseModel):
    code: str = Field(description="Clinical class.")
    percent: float
    direction: Literal["high", "low"]
    limit: float = Field(description="The rule's limit that was crossed, in percent.")
    text: str = Field(description="For people, e.g. 'LY high (52.0% > 45%)'.")


class FlagsOut(BaseModel):
    pathological: list[str] = Field(description="Pathological classes present.")
    needs_review: int
    pending: int
    abnormal: list[AbnormalOut] = Field(
        description="Proportions outside the laboratory's rules (only once assessed)."
    )
    proportions_assessed: bool = Field(
        description="Whether enough leukocytes (100 or 200, per settings) were differentiated "
        "to flag proportions."
    )


class SlideSummaryOut(SlideOut):
    """A slide with its differential and flags."""

    cells: int
    needs_review: int
    vocabulary: str = Field(description="The class vocabulary: healthy or clinical.")
    classes: list[str]
    class_names: dict[str, str] = Field(description="What each class code means.")
    leukocyte_classes: list[str]
    apart_classes: list[str] = Field(
        description="Classes counted but in neither the percentages nor per 100 leukocytes."
    )
    differential: DifferentialOut
    flags: FlagsOut

    @classmethod
    def of(cls, summary: SlideSummary) -> SlideSummaryOut:
        diff, flags = summary.differential, summary.flags
        vocabulary = vocabulary_of(diff.vocabulary)
        return cls.model_validate(
            {
                **cls.slide_fields(summary.slide),
                "cells": diff.total,
                "needs_review": diff.needs_review,
                "vocabulary": vocabulary.name,
                "classes": list(vocabulary.classes),
                "class_names": dict(vocabulary.names),
                "leukocyte_classes": list(vocabulary.leukocytes),
                "apart_classes": list(vocabulary.apart),
                "differential": {
                    "counts": diff.counts,
                    "percent": diff.percent,
                    "percent_interval": diff.percent_interval,
                    "per_100_leukocytes": diff.per_100_leukocytes,
                    "leukocytes": diff.leukocytes,
                    "counted": diff.counted,
                    "poor_quality": diff.poor_quality,
                    "pending": diff.pending,
                },
                "flags": {
                    "pathological": flags.pathological,
                    "needs_review": flags.needs_review,
                    "pending": flags.pending,
                    "abnormal": [
                        {**dataclasses.asdict(found), "text": str(found)}
                        for found in flags.abnormal
                    ],
                    "proportions_assessed": flags.proportions_assessed,
                },
            }
        )


class CellOut(BaseModel):
    """A cell with its effective class, scores and image links."""

    model_config = ConfigDict(populate_by_name=True)

    id: str
    slide_id: str
    field_index: int
    index: int
    cell_class: str | None = Field(alias="class", description="The effective class.")
    predicted_class: str | None
    confidence: float | None = Field(description="δ of the stained image.")
    confidence_variant: str | None = Field(
        description="Which δ: whole-latent (thesis ch. 7) or disentangled (ch. 6)."
    )
    uncertainty: float | None = Field(description="γ of the stained image.")
    review_status: str
    review_reasons: list[str] = Field(
        description="Why the cell was sent to review: low-delta (δ under the model's "
        "threshold), uncertain-class (calibrated top probability under the setting), "
        "pathological; empty when it was not."
    )
    images: dict[str, str] = Field(description="Image kind → URL of the PNG.")

    @staticmethod
    def cell_fields(view: CellView, images: dict[str, str]) -> dict[str, object]:
        prediction = view.prediction
        return {
            "id": view.cell.id,
            "slide_id": view.cell.slide_id,
            "field_index": view.cell.field_index,
            "index": view.cell.index,
            "class": view.effective_class,
            "predicted_class": prediction.predicted_class if prediction else None,
            "confidence": prediction.confidence if prediction else None,
            "confidence_variant": prediction.confidence_variant if prediction else None,
            "uncertainty": prediction.uncertainty if prediction else None,
            "review_status": view.review_status.value,
            "review_reasons": (prediction.review_reasons or []) if prediction else [],
            "images": images,
        }

    @classmethod
    def of(cls, view: CellView, images: dict[str, str]) -> CellOut:
        return cls.model_validate(cls.cell_fields(view, images))


class BoxOut(BaseModel):
    x0: int
    y0: int
    x1: int
    y1: int


class LatestReviewOut(BaseModel):
    action: str
    new_class: str | None
    reviewer: str
    at: str | None


class CellDetailOut(CellOut):
    """A cell with its probabilities, model version, box and latest review."""

    probabilities: dict[str, float]
    model_version: str | None
    box: BoxOut
    at_border: bool
    latest_review: LatestReviewOut | None

    @classmethod
    def of(cls, view: CellView, images: dict[str, str]) -> CellDetailOut:
        prediction, review, cell = view.prediction, view.latest_review, view.cell
        return cls.model_validate(
            {
                **cls.cell_fields(view, images),
                "probabilities": prediction.probabilities if prediction else {},
                "model_version": prediction.model_version if prediction else None,
                "box": {"x0": cell.x0, "y0": cell.y0, "x1": cell.x1, "y1": cell.y1},
                "at_border": cell.at_border,
                "latest_review": None
                if review is None
                else {
                    "action": ReviewAction(review.action).value,
                    "new_class": review.new_class,
                    "reviewer": review.reviewer,
                    "at": _when(review.created_at),
                },
            }
        )


class ReviewOut(BaseModel):
    """A recorded review and the cell's state after it."""

    model_config = ConfigDict(populate_by_name=True)

    review_id: str
    cell_id: str
    slide_id: str
    action: str
    new_class: str | None
    cell_class: str | None = Field(alias="class", description="The effective class now.")
    review_status: str
    reviewer: str
