"""Read side of the review stage: slides, their cells, the differential and the flags.

Each cell is seen with its effective class (``stainless.core.db.cells``); the
differential and its flags follow ``stainless.domain.differential``.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from stainless.core.db.cells import CellView, cell_views, resolve, sorted_rows
from stainless.core.db.models import Cell, Prediction, Review, SignedReport, Slide
from stainless.core.http.errors import NotFound
from stainless.domain.differential import (
    ClinicalRules,
    Differential,
    Flags,
    differential,
    flags,
)
from stainless.domain.review import ReviewStatus
from stainless.domain.vocabulary import vocabulary_for
from stainless.stages.review import fhir
from stainless.stages.review.staining import StainingConfidence, staining_confidence


@dataclass(frozen=True)
class SlideSummary:
    slide: Slide
    differential: Differential
    flags: Flags
    staining: tuple[StainingConfidence, ...] = ()


def get_slide(session: Session, slide_id: str) -> Slide:
    slide = session.get(Slide, slide_id)
    if slide is None:
        raise NotFound(f"no slide {slide_id}")
    return slide


def slide_summary(engine: Engine, *, slide_id: str, rules: ClinicalRules) -> SlideSummary:
    """The slide, its differential and its flags; :class:`NotFound` for an unknown id."""
    with Session(engine) as session:
        slide = get_slide(session, slide_id)
        views = cell_views(session, slide_id=slide_id)
    diff = differential(views, vocabulary_for(view.effective_class for view in views))
    return SlideSummary(
        slide,
        diff,
        flags(diff, rules),
        staining_confidence(views),
    )


def signed_report(engine: Engine, *, slide_id: str) -> SignedReport | None:
    """The latest report stored at signing, or None while the slide is unsigned."""
    with Session(engine) as session:
        return session.exec(
            select(SignedReport)
            .where(SignedReport.slide_id == slide_id)
            .order_by(col(SignedReport.version).desc())
        ).first()


def fhir_report(engine: Engine, *, slide_id: str, rules: ClinicalRules) -> tuple[bytes, str | None]:
    """The slide's FHIR DiagnosticReport as it is served: once signed, the report as
    signed, byte for byte, with its SHA-256; before, the current one and None."""
    signed = signed_report(engine, slide_id=slide_id)
    if signed is not None:
        return fhir.canonical_json(signed.body), signed.sha256
    found = slide_summary(engine, slide_id=slide_id, rules=rules)
    report = fhir.diagnostic_report(
        found.slide, found.differential, found.flags, staining=found.staining
    )
    return fhir.canonical_json(report), None


@dataclass(frozen=True)
class SlideRow:
    slide: Slide
    cells: int
    needs_review: int
    pending: int


def list_slides(engine: Engine) -> list[SlideRow]:
    """Every slide, newest first, with its cell counts."""
    with Session(engine) as session:
        slides = session.exec(
            select(Slide).order_by(col(Slide.created_at).desc(), col(Slide.id))
        ).all()
        by_slide: dict[str, list[CellView]] = {}
        for view in cell_views(session):
            by_slide.setdefault(view.cell.slide_id, []).append(view)
    rows = []
    for slide in slides:
        views = by_slide.get(slide.id, [])
        rows.append(
            SlideRow(
                slide=slide,
                cells=len(views),
                needs_review=sum(v.review_status is ReviewStatus.NEEDS_REVIEW for v in views),
                pending=sum(v.effective_class is None for v in views),
            )
        )
    return rows


def slide_cells(
    engine: Engine,
    *,
    slide_id: str,
    cell_class: str | None = None,
    review_status: ReviewStatus | None = None,
) -> list[CellView]:
    """The slide's cells, optionally only those of one effective class or review status."""
    with Session(engine) as session:
        get_slide(session, slide_id)
        views = cell_views(session, slide_id=slide_id)
    return [
        view
        for view in views
        if (cell_class is None or view.effective_class == cell_class)
        and (review_status is None or view.review_status is review_status)
    ]


def cell_view(engine: Engine, *, cell_id: str) -> CellView:
    """One cell with its latest prediction; :class:`NotFound` for an unknown id."""
    with Session(engine) as session:
        return load_cell_view(session, cell_id)


def load_cell_view(session: Session, cell_id: str) -> CellView:
    cell = session.get(Cell, cell_id)
    if cell is None:
        raise NotFound(f"no cell {cell_id}")
    predictions = session.exec(select(Prediction).where(Prediction.cell_id == cell_id)).all()
    reviews = session.exec(select(Review).where(Review.cell_id == cell_id)).all()
    ordered = sorted_rows(predictions)
    return resolve(cell, ordered[-1] if ordered else None, sorted_rows(reviews))
