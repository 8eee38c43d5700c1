"""The results service on a real Postgres: review, sign and the final FHIR report."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from sqlmodel import Session, col, select

from stainless.core.audit import Actor
from stainless.core.config import DatabaseSettings, Settings, StoreSettings
from stainless.core.db.engine import create_db_engine, session_scope
from stainless.core.db.migrate import upgrade
from stainless.core.db.models import Cell, OutboxEvent, Prediction, SlideStatus
from stainless.core.db.repository import create_slide, get_or_create_scanner
from stainless.core.events.contracts import Topic
from stainless.core.http.auth import Role, create_key
from stainless.core.storage.local import LocalObjectStore
from stainless.domain.review import ReviewStatus
from stainless.stages.review.api import create_app
from stainless.stages.review.study import create_study, label_item, study_labels, study_row
from stainless.stages.review.study_report import study_report

pytestmark = pytest.mark.integration


def test_review_sign_and_report_on_postgres(postgres_url: str, tmp_path: Path) -> None:
    upgrade(postgres_url)
    settings = Settings(
        database=DatabaseSettings(url=postgres_url),
        store=StoreSettings(root=tmp_path / "store"),
    )
    engine = create_db_engine(settings.database)
    with session_scope(engine) as session:
        _, key = create_key(session, name="pat", role=Role.REVIEWER, days=1)
    reviewer = {"Authorization": f"Bearer {key}"}
    with session_scope(engine) as session:
        scanner = get_or_create_scanner(session, name="pg-results", key_prefix="k", key_hash="h")
        slide = create_slide(
            session, scanner_id=scanner.id, external_id="PG-R1", patient_pseudonym="P"
        )
        slide.status = SlideStatus.COMPLETED
        cells = [
            Cell(slide_id=slide.id, field_index=0, index=i, x0=0, y0=0, x1=8, y1=8)
            for i in range(3)
        ]
        session.add_all(cells)
        session.flush()
        for cell, (code, status) in zip(
            cells,
            [
                ("SNE", ReviewStatus.CONFIRMED),
                ("LY", ReviewStatus.CONFIRMED),
                ("SNE", ReviewStatus.NEEDS_REVIEW),
            ],
            strict=True,
        ):
            session.add(
                Prediction(
                    cell_id=cell.id, model_version="m1", predicted_class=code, review_status=status
                )
            )
    client = TestClient(
        create_app(
            settings.results,
            settings.clinical,
            engine=engine,
            store=LocalObjectStore(tmp_path / "store"),
        )
    )

    refused = client.post(f"/v1/slides/{slide.id}/sign", headers=reviewer)
    assert refused.status_code == 409 and "1 cell still needs review" in refused.json()["detail"]
    reviewed = client.post(
        f"/v1/cells/{cells[2].id}/reviews",
        json={"action": "reclassify", "new_class": "EO"},
        headers=reviewer,
    )
    assert reviewed.status_code == 201, reviewed.text
    signed = client.post(f"/v1/slides/{slide.id}/sign", headers=reviewer)
    assert signed.status_code == 200, signed.text
    assert (signed.json()["status"], signed.json()["signed_by"]) == ("signed", "pat")

    report = client.get(f"/v1/slides/{slide.id}/fhir", headers=reviewer).json()
    DiagnosticReport.model_validate(report)
    assert report["status"] == "final"
    percent = {o["id"]: o.get("valueQuantity", {}).get("value") for o in report["contained"]}
    assert (percent["obs-SNE"], percent["obs-LY"], percent["obs-EO"]) == (33.3, 33.3, 33.3)
    with Session(engine) as session:
        topics = session.exec(select(OutboxEvent.topic).order_by(col(OutboxEvent.id))).all()
    assert list(topics) == [Topic.REVIEWS_RECORDED, Topic.REPORTS_SIGNED]
    engine.dispose()


def test_a_validation_study_on_postgres(postgres_url: str, tmp_path: Path) -> None:
    upgrade(postgres_url)
    engine = create_db_engine(DatabaseSettings(url=postgres_url))
    truths = ["LY", "LY", "MO", "SNE", "BL"]
    with session_scope(engine) as session:
        scanner = get_or_create_scanner(session, name="pg-study", key_prefix="k", key_hash="h")
        slide = create_slide(
            session, scanner_id=scanner.id, external_id="PG-S1", patient_pseudonym="P"
        )
        cells = [
            Cell(slide_id=slide.id, field_index=0, index=i, x0=0, y0=0, x1=8, y1=8, true_class=t)
            for i, t in enumerate(truths)
        ]
        session.add_all(cells)
        session.flush()
        session.add_all(
            Prediction(cell_id=c.id, model_version="m1", predicted_class="LY", stain_key=f"s/{i}")
            for i, c in enumerate(cells)
        )
    lead = Actor("sam", "scientist")
    drawn = create_study(engine, name="pg", slide_ids=[slide.id], cells=5, seed=1, actor=lead)
    assert drawn.study.vocabulary == "clinical"  # a blast: the clinical classes
    found = study_labels(engine, study_id=drawn.study.id)
    for expert in ("rita", "erin"):
        for item in found.items:
            for label in ("PQ", item.reference_class):  # a second label replaces the first
                label_item(
                    engine,
                    study_id=drawn.study.id,
                    item_id=item.id,
                    expert=expert,
                    label=label,
                    actor=Actor(expert, "reviewer"),
                )
    assert study_row(engine, study_id=drawn.study.id).labelled == {"erin": 5, "rita": 5}
    report = study_report(study_labels(engine, study_id=drawn.study.id))
    accuracy = {rater.name: rater.summary.accuracy for rater in report.raters}
    assert accuracy == {"erin": 1.0, "rita": 1.0, "automatic classifier": 0.4}
    first = report.agreements[0]
    assert (first.first, first.second, first.kappa) == ("erin", "rita", 1.0)
    engine.dispose()
