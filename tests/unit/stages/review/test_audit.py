"""The audit trail, signing as a reviewer's own act, and the report as signed."""

from __future__ import annotations

import hashlib
import json

from fastapi.testclient import TestClient
from sqlmodel import Session, select

from stainless.core.db.engine import session_scope
from stainless.core.db.models import AuditEvent, Prediction, SignedReport
from stainless.domain.review import ReviewStatus

from .conftest import ADMIN, REVIEWER, SCIENTIST, CellSpec, World


def _trail(world: World) -> list[tuple[str, str, str]]:
    with Session(world.engine) as session:
        rows = session.exec(select(AuditEvent).order_by(AuditEvent.id)).all()
    return [(row.actor, row.action, row.target) for row in rows]


def test_reads_of_patient_data_are_recorded(client: TestClient, world: World) -> None:
    built = world.slide([CellSpec("LY")])
    cell = built.cell_ids[0]
    assert client.get(f"/v1/slides/{built.slide_id}", headers=SCIENTIST).is_success
    assert client.get(f"/v1/cells/{cell}", headers=REVIEWER).is_success
    assert client.get(f"/v1/cells/{cell}/images/stained.png", headers=REVIEWER).is_success
    assert client.get(f"/v1/slides/{built.slide_id}/fhir", headers=REVIEWER).is_success
    assert (
        client.get("/v1/slides/00000000-0000-0000-0000-000000000000", headers=REVIEWER).status_code
        == 404
    )
    assert _trail(world) == [
        ("sam", "read", f"slide:{built.slide_id}"),
        ("rita", "read", f"cell:{cell}"),
        ("rita", "read", f"cell:{cell}:stained"),
        ("rita", "read", f"slide:{built.slide_id}:fhir"),
    ]
    with Session(world.engine) as session:
        assert {row.client for row in session.exec(select(AuditEvent))} == {"testclient"}


def test_only_an_admin_reads_the_trail(client: TestClient, world: World) -> None:
    built = world.slide([CellSpec("LY", status=ReviewStatus.NEEDS_REVIEW)])
    cell = built.cell_ids[0]
    body = {"action": "reclassify", "new_class": "MO"}
    assert client.post(f"/v1/cells/{cell}/reviews", json=body, headers=REVIEWER).status_code == 201
    assert client.get("/v1/audit", headers=REVIEWER).status_code == 403
    trail = client.get("/v1/audit", params={"action": "review"}, headers=ADMIN)
    assert trail.status_code == 200
    (event,) = trail.json()
    assert (event["actor"], event["role"], event["target"]) == ("rita", "reviewer", f"cell:{cell}")
    assert event["detail"] == {"action": "reclassify", "new_class": "MO"}


def test_an_admin_key_cannot_sign(client: TestClient, world: World) -> None:
    built = world.slide([CellSpec("LY")])
    refused = client.post(f"/v1/slides/{built.slide_id}/sign", headers=ADMIN)
    assert refused.status_code == 403 and "signing needs the role reviewer" in refused.text
    assert client.post(f"/v1/slides/{built.slide_id}/sign", headers=REVIEWER).is_success
    assert ("rita", "sign", f"slide:{built.slide_id}") in _trail(world)


def test_the_signed_report_is_stored_and_served_unchanged(client: TestClient, world: World) -> None:
    built = world.slide([CellSpec("LY"), CellSpec("MO")])
    preliminary = client.get(f"/v1/slides/{built.slide_id}/fhir", headers=REVIEWER)
    assert preliminary.json()["status"] == "preliminary" and "ETag" not in preliminary.headers
    assert client.post(f"/v1/slides/{built.slide_id}/sign", headers=REVIEWER).is_success
    signed = client.get(f"/v1/slides/{built.slide_id}/fhir", headers=REVIEWER)
    digest = hashlib.sha256(signed.content).hexdigest()
    assert signed.headers["ETag"] == f'"{digest}"'
    assert signed.json()["status"] == "final" and signed.json()["meta"] == {"versionId": "1"}
    with session_scope(world.engine) as session:
        (stored,) = session.exec(select(SignedReport)).all()
        assert (stored.sha256, stored.signed_by, stored.version) == (digest, "rita", 1)
    (event,) = world.events("reports.signed")
    assert json.loads(event.payload)["payload"] == {
        "slide_id": built.slide_id,
        "version": 1,
        "sha256": digest,
        "signed_by": "rita",
    }
    with session_scope(world.engine) as session:
        # Whatever happens to the rows afterwards, the signed report stays as it was.
        for prediction in session.exec(select(Prediction)):
            prediction.predicted_class = "BA"
            session.add(prediction)
    again = client.get(f"/v1/slides/{built.slide_id}/fhir", headers=REVIEWER)
    assert again.content == signed.content
