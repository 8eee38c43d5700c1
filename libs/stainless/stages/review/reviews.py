"""Write side: expert reviews of cells and signing of slides.

Each function is one transaction (``session_scope``): it checks, then writes
its rows, the events announcing them and, given an actor, its audit event together,
or raises and writes nothing. The slide row is locked (``FOR UPDATE`` on Postgres) so
a review and a signature of the same slide cannot interleave. Signing stores the
report as signed, with its SHA-256: from then on that is the slide's report.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from prometheus_client import Counter
from sqlalchemy import Engine
from sqlmodel import Session, select

from stainless.core.audit import Actor, add_audit
from stainless.core.db.cells import cell_views, resolve, sorted_rows
from stainless.core.db.engine import session_scope
from stainless.core.db.models import Prediction, Review, SignedReport, Slide, SlideStatus, utcnow
from stainless.core.events.contracts import Envelope, ReportSigned, ReviewRecorded
from stainless.core.events.outbox import add_event
from stainless.core.http.errors import Conflict, Invalid, NotFound
from stainless.domain.differential import ClinicalRules, differential, flags
from stainless.domain.review import ReviewAction, ReviewStatus
from stainless.domain.vocabulary import REVIEW_CLASSES, vocabulary_for
from stainless.stages.review.fhir import canonical_json, diagnostic_report
from stainless.stages.review.queries import load_cell_view
from stainless.stages.review.staining import staining_confidence

REVIEWS = Counter("stainless_results_reviews_total", "Cell reviews recorded", ["action"])
SIGNED = Counter("stainless_results_slides_signed_total", "Slides signed")


@dataclass(frozen=True)
class RecordedReview:
    review: Review
    slide_id: str
    review_status: ReviewStatus
    effective_class: str


def _locked_slide(session: Session, slide_id: str) -> Slide:
    slide = session.exec(select(Slide).where(Slide.id == slide_id).with_for_update()).first()
    if slide is None:
        raise NotFound(f"no slide {slide_id}")
    return slide


def _checked_class(action: ReviewAction, new_class: str | None) -> str | None:
    if action is ReviewAction.RECLASSIFY:
        if not new_class:
            raise Invalid("reclassify needs new_class")
        if new_class not in REVIEW_CLASSES:
            known = ", ".join(REVIEW_CLASSES)
            raise Invalid(f"unknown class {new_class!r}; expected one of {known}")
        return new_class
    if new_class is not None:
        raise Invalid(f"new_class is only allowed with reclassify, not {action.value}")
    return None


def _unreviewed(prediction: Prediction) -> ReviewStatus:
    """The status a prediction had before any review: needs review when it gave a reason
    (or, from before reasons were kept, may have), else pending."""
    if prediction.review_reasons is None or prediction.review_reasons:
        return ReviewStatus.NEEDS_REVIEW
    return ReviewStatus.PENDING


def review_cell(
    engine: Engine,
    *,
    cell_id: str,
    action: ReviewAction,
    reviewer: str,
    new_class: str | None = None,
    actor: Actor | None = None,
) -> RecordedReview:
    """Record one review, update the latest prediction's status and emit ``reviews.recorded``.

    ``undo`` withdraws the cell's latest review that still stands: the cell is back in the
    state before it (its prediction's own status when no review is left).

    Raises:
        Invalid: ``new_class`` missing, not one of ``REVIEW_CLASSES``, or given without
            reclassify.
        NotFound: no such cell.
        Conflict: the cell has no prediction yet, its slide is signed, or an undo finds no
            review to withdraw.
    """
    action = ReviewAction(action)
    checked_class = _checked_class(action, new_class)
    with session_scope(engine) as session:
        view = load_cell_view(session, cell_id)
        slide = _locked_slide(session, view.cell.slide_id)
        if slide.status == SlideStatus.SIGNED:
            raise Conflict(f"slide {slide.id} is signed; its cells can no longer be reviewed")
        prediction = view.prediction
        if prediction is None:
            raise Conflict(f"cell {cell_id} has no prediction yet; nothing to review")
        if action is ReviewAction.UNDO and view.latest_review is None:
            raise Conflict(f"cell {cell_id} has no review to undo")
        earlier = session.exec(select(Review).where(Review.cell_id == cell_id)).all()
        review = Review(
            cell_id=cell_id,
            prediction_id=prediction.id,
            reviewer=reviewer,
            action=action,
            new_class=checked_class,
        )
        after = resolve(view.cell, prediction, [*sorted_rows(earlier), review])
        prediction.review_status = (
            after.review_status if after.latest_review else _unreviewed(prediction)
        )
        session.add(review)
        session.add(prediction)
        session.flush()
        add_event(
            session,
            Envelope.wrap(
                ReviewRecorded(
                    slide_id=slide.id,
                    cell_id=cell_id,
                    review_id=review.id,
                    action=action.value,
                    new_class=checked_class,
                    reviewer=reviewer,
                ),
                key=slide.id,
            ),
        )
        if actor is not None:
            detail = {"action": action.value, "new_class": checked_class}
            add_audit(session, actor, "review", f"cell:{cell_id}", detail)
        status = ReviewStatus(prediction.review_status)
        effective = after.effective_class or prediction.predicted_class
    REVIEWS.labels(action=action.value).inc()
    return RecordedReview(review, slide.id, status, effective)


def sign_slide(
    engine: Engine,
    *,
    slide_id: str,
    signer: str,
    rules: ClinicalRules,
    actor: Actor | None = None,
) -> SignedReport:
    """Sign a completed slide whose cells are all reviewed; store its final report.

    Raises:
        NotFound: no such slide.
        Conflict: the slide is not completed (or already signed), or cells still need review.
    """
    with session_scope(engine) as session:
        slide = _locked_slide(session, slide_id)
        if slide.status == SlideStatus.SIGNED:
            raise Conflict(f"slide {slide_id} was already signed by {slide.signed_by}")
        if slide.status != SlideStatus.COMPLETED:
            raise Conflict(
                f"slide {slide_id} is {slide.status.value}; only a completed slide can be signed"
            )
        views = cell_views(session, slide_id=slide_id)
        waiting = sum(view.review_status is ReviewStatus.NEEDS_REVIEW for view in views)
        if waiting:
            cells = "cell still needs" if waiting == 1 else "cells still need"
            raise Conflict(f"{waiting} {cells} review before slide {slide_id} can be signed")
        slide.status = SlideStatus.SIGNED
        slide.signed_by = signer
        slide.signed_at = utcnow()
        session.add(slide)
        diff = differential(views, vocabulary_for(view.effective_class for view in views))
        body = diagnostic_report(
            slide,
            diff,
            flags(diff, rules),
            staining=staining_confidence(views),
        )
        body["meta"] = {"versionId": "1"}
        report = SignedReport(
            slide_id=slide_id,
            version=1,
            sha256=hashlib.sha256(canonical_json(body)).hexdigest(),
            body=body,
            signed_by=signer,
            signed_at=slide.signed_at,
        )
        session.add(report)
        signed = ReportSigned(
            slide_id=slide_id, version=report.version, sha256=report.sha256, signed_by=signer
        )
        add_event(session, Envelope.wrap(signed, key=slide_id))
        if actor is not None:
            add_audit(session, actor, "sign", f"slide:{slide_id}", {"sha256": report.sha256})
    SIGNED.inc()
    return report
