"""The results API on SQLite and a local store: reads, images, reviews, signing, pages."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from stainless.core.db.models import Prediction, Slide, SlideStatus
from stainless.core.events.contracts import Envelope, ReviewRecorded, Topic
from stainless.core.observability import create_metrics_app
from stainless.domain.review import ReviewStatus

from .conftest import REVIEWER, SCIENTIST, CellSpec, World

NEEDS = ReviewStatus.NEEDS_REVIEW
UNKNOWN = "00000000-0000-4000-8000-000000000000"


def _review(client: TestClient, cell_id: str, **body: object):  # type: ignore[no-untyped-def]
    return client.post(f"/v1/cells/{cell_id}/reviews", json=body, headers=REVIEWER)


def test_slides_are_listed_and_detailed(client: TestClient, world: World) -> None:
    built = world.slide([CellSpec("SNE"), CellSpec("SMU"), CellSpec("LY", NEEDS, 0.4)])
    listed = client.get("/v1/slides", headers=SCIENTIST).json()
    assert [(s["id"], s["status"], s["cells"], s["needs_review"]) for s in listed] == [
        (built.slide_id, "completed", 3, 1)
    ]
    detail = client.get(f"/v1/slides/{built.slide_id}", headers=SCIENTIST).json()
    assert detail["status"] == "completed" and detail["needs_review"] == 1
    assert detail["differential"]["counts"]["SMU"] == 1
    assert detail["differential"]["percent"] == {
        "BA": 0.0,
        "EO": 0.0,
        "LY": 50.0,
        "MO": 0.0,
        "SNE": 50.0,
    }
    assert detail["differential"]["percent_interval"]["LY"] == [9.5, 90.5]  # 1 of 2
    assert detail["differential"]["per_100_leukocytes"] == {}
    assert detail["flags"] == {
        "pathological": ["SMU"],
        "needs_review": 1,
        "pending": 0,
        "abnormal": [],
        "proportions_assessed": False,  # 2 leukocytes, not the 100 of a differential
    }
    assert detail["vocabulary"] == "healthy"
    assert detail["classes"] == ["ART", "BA", "EO", "LY", "MO", "SNE", "SMU"]
    assert detail["class_names"]["SMU"] == "smudge cell"
    assert detail["apart_classes"] == ["ART", "SMU"]
    assert (detail["signed_by"], detail["signed_at"]) == (None, None)


def test_cells_are_listed_filtered_and_detailed(client: TestClient, world: World) -> None:
    built = world.slide([CellSpec("SNE"), CellSpec("LY", NEEDS, 0.4), CellSpec(None)])
    base = f"/v1/slides/{built.slide_id}/cells"
    assert len(client.get(base, headers=SCIENTIST).json()) == 3
    by_class = client.get(base, params={"class": "LY"}, headers=SCIENTIST).json()
    assert [c["id"] for c in by_class] == [built.cell_ids[1]]
    waiting = client.get(base, params={"review_status": "needs_review"}, headers=SCIENTIST).json()
    assert [c["id"] for c in waiting] == [built.cell_ids[1]]
    pending = client.get(base, params={"review_status": "pending"}, headers=SCIENTIST).json()
    assert [(c["id"], c["class"]) for c in pending] == [(built.cell_ids[2], None)]
    bad = client.get(base, params={"review_status": "maybe"}, headers=SCIENTIST)
    assert bad.status_code == 422 and bad.json()["error"] == "invalid"
    cell = client.get(f"/v1/cells/{built.cell_ids[1]}", headers=SCIENTIST).json()
    assert (cell["class"], cell["confidence"], cell["uncertainty"]) == (
        "LY",
        0.4,
        pytest.approx(0.6),
    )
    assert cell["probabilities"] == {"LY": 0.4} and cell["review_status"] == "needs_review"
    assert cell["confidence_variant"] == "whole-latent"  # every δ names its variant
    assert set(cell["images"]) == {"stained", "dic", "heatmap"}


def test_images_are_pngs_and_the_dic_crop_is_stretched_to_8_bits(
    client: TestClient, world: World
) -> None:
    built = world.slide([CellSpec("SNE", bf=True), CellSpec("LY")])
    first, second = built.cell_ids
    for kind in ("stained", "heatmap", "brightfield", "dic"):
        answer = client.get(f"/v1/cells/{first}/images/{kind}.png", headers=SCIENTIST)
        assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
    dic = client.get(f"/v1/cells/{first}/images/dic.png", headers=SCIENTIST).content
    pixels = cv2.imdecode(np.frombuffer(dic, np.uint8), cv2.IMREAD_UNCHANGED)
    assert pixels.dtype == np.uint8 and pixels.shape == (32, 32)
    assert pixels.min() == 0 and pixels.max() == 255
    stored = world.store.get(f"stained/{built.slide_id}/0.png")
    assert client.get(f"/v1/cells/{first}/images/stained.png", headers=SCIENTIST).content == stored
    absent = client.get(f"/v1/cells/{second}/images/brightfield.png", headers=SCIENTIST)
    assert absent.status_code == 404 and absent.json()["error"] == "not_found"
    world.store.delete(f"heatmaps/{built.slide_id}/1.png")
    assert (
        client.get(f"/v1/cells/{second}/images/heatmap.png", headers=SCIENTIST).status_code == 404
    )
    assert client.get(f"/v1/cells/{first}/images/xray.png", headers=SCIENTIST).status_code == 422


@pytest.mark.parametrize(
    "path",
    [
        f"/v1/slides/{UNKNOWN}",
        f"/v1/slides/{UNKNOWN}/cells",
        f"/v1/slides/{UNKNOWN}/fhir",
        f"/v1/cells/{UNKNOWN}",
        f"/v1/cells/{UNKNOWN}/images/dic.png",
    ],
)
def test_unknown_ids_are_404_and_malformed_ids_422(client: TestClient, path: str) -> None:
    answer = client.get(path, headers=SCIENTIST)
    assert answer.status_code == 404 and set(answer.json()) == {"error", "detail"}
    malformed = client.get(path.replace(UNKNOWN, "not-an-id"), headers=SCIENTIST)
    assert malformed.status_code == 422 and malformed.json()["error"] == "invalid"


def test_a_review_writes_one_row_updates_the_prediction_and_emits_one_event(
    client: TestClient, world: World
) -> None:
    built = world.slide([CellSpec("SNE", NEEDS, 0.3), CellSpec("LY")])
    cell = built.cell_ids[0]
    answer = _review(client, cell, action="reclassify", new_class="EO")
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert (body["class"], body["review_status"], body["reviewer"]) == (
        "EO",
        "reclassified",
        "rita",
    )
    with Session(world.engine) as session:
        prediction = session.get(Prediction, _prediction_id(world, cell))
        assert prediction is not None and prediction.review_status == ReviewStatus.RECLASSIFIED
    events = world.events(Topic.REVIEWS_RECORDED)
    assert len(events) == 1 and events[0].key == built.slide_id
    payload = Envelope.model_validate_json(events[0].payload).parsed(ReviewRecorded)
    assert (
        payload.cell_id,
        payload.review_id,
        payload.action,
        payload.new_class,
        payload.reviewer,
    ) == (
        cell,
        body["review_id"],
        "reclassify",
        "EO",
        "rita",
    )
    detail = client.get(f"/v1/slides/{built.slide_id}", headers=SCIENTIST).json()
    assert detail["differential"]["counts"]["EO"] == 1 and detail["needs_review"] == 0


def test_undo_withdraws_the_latest_review_until_none_is_left(
    client: TestClient, world: World
) -> None:
    built = world.slide([CellSpec("SNE", NEEDS, 0.3), CellSpec("LY", ReviewStatus.PENDING)])
    queued, gallery = built.cell_ids

    def state(cell: str) -> tuple[str, str]:
        body = client.get(f"/v1/cells/{cell}", headers=SCIENTIST).json()
        return body["class"], body["review_status"]

    assert _review(client, queued, action="reclassify", new_class="EO").status_code == 201
    assert _review(client, queued, action="confirm").status_code == 201
    undone = _review(client, queued, action="undo")
    assert undone.status_code == 201, undone.text
    assert (undone.json()["class"], undone.json()["review_status"]) == ("EO", "reclassified")
    assert state(queued) == ("EO", "reclassified")
    _review(client, queued, action="undo")
    assert state(queued) == ("SNE", "needs_review")  # back in the queue
    detail = client.get(f"/v1/slides/{built.slide_id}", headers=SCIENTIST).json()
    assert detail["needs_review"] == 1 and detail["differential"]["counts"]["EO"] == 0
    before = world.snapshot()
    nothing = _review(client, queued, action="undo")
    assert nothing.status_code == 409 and "no review to undo" in nothing.json()["detail"]
    assert world.snapshot() == before
    # a gallery cell (not in the queue) reclassified and undone is pending again
    _review(client, gallery, action="reclassify", new_class="MO")
    assert state(gallery) == ("MO", "reclassified")
    _review(client, gallery, action="undo")
    assert state(gallery) == ("LY", "pending")
    actions = [
        Envelope.model_validate_json(e.payload).parsed(ReviewRecorded).action
        for e in world.events(Topic.REVIEWS_RECORDED)
    ]
    assert actions == ["reclassify", "confirm", "undo", "undo", "reclassify", "undo"]


def _prediction_id(world: World, cell_id: str) -> str:
    from sqlmodel import select

    with Session(world.engine) as session:
        return session.exec(select(Prediction.id).where(Prediction.cell_id == cell_id)).one()


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"action": "reclassify", "new_class": "XX"}, 422, "unknown class 'XX'"),
        ({"action": "reclassify", "new_class": "sne"}, 422, "unknown class"),
        ({"action": "reclassify"}, 422, "needs new_class"),
        ({"action": "confirm", "new_class": "LY"}, 422, "only allowed with reclassify"),
        ({"action": "approve"}, 422, "action"),
        ({"action": "confirm", "extra": 1}, 422, "extra"),
    ],
)
def test_bad_reviews_are_refused_and_change_nothing(
    client: TestClient, world: World, body: dict[str, object], status: int, needle: str
) -> None:
    built = world.slide([CellSpec("SNE", NEEDS)])
    before = world.snapshot()
    answer = _review(client, built.cell_ids[0], **body)
    assert answer.status_code == status and needle in answer.json()["detail"]
    assert world.snapshot() == before


def test_reviews_of_unknown_pending_or_signed_cells_are_refused(
    client: TestClient, world: World
) -> None:
    built = world.slide([CellSpec(None)])
    signed = world.slide([CellSpec("LY")], status=SlideStatus.SIGNED)
    before = world.snapshot()
    unknown = _review(client, UNKNOWN, action="confirm")
    assert unknown.status_code == 404 and UNKNOWN in unknown.json()["detail"]
    pending = _review(client, built.cell_ids[0], action="poor_quality")
    assert pending.status_code == 409 and "no prediction yet" in pending.json()["detail"]
    late = _review(client, signed.cell_ids[0], action="confirm")
    assert late.status_code == 409 and "is signed" in late.json()["detail"]
    assert world.snapshot() == before


def test_signing_needs_a_completed_slide_with_every_cell_reviewed(
    client: TestClient, world: World
) -> None:
    processing = world.slide([CellSpec("LY")], status=SlideStatus.PROCESSING)
    waiting = world.slide([CellSpec("LY", NEEDS), CellSpec("SNE", NEEDS), CellSpec("MO")])
    before = world.snapshot()
    early = client.post(f"/v1/slides/{processing.slide_id}/sign", headers=REVIEWER)
    assert early.status_code == 409
    assert early.json()["detail"] == (
        f"slide {processing.slide_id} is processing; only a completed slide can be signed"
    )
    unreviewed = client.post(f"/v1/slides/{waiting.slide_id}/sign", headers=REVIEWER)
    assert unreviewed.status_code == 409 and unreviewed.json()["detail"].startswith(
        "2 cells still need review"
    )
    assert client.post(f"/v1/slides/{UNKNOWN}/sign", headers=REVIEWER).status_code == 404
    assert world.snapshot() == before

    assert _review(client, waiting.cell_ids[0], action="confirm").status_code == 201
    assert _review(client, waiting.cell_ids[1], action="poor_quality").status_code == 201
    signed = client.post(f"/v1/slides/{waiting.slide_id}/sign", headers=REVIEWER)
    assert signed.status_code == 200, signed.text
    assert (signed.json()["status"], signed.json()["signed_by"]) == ("signed", "rita")
    assert signed.json()["signed_at"] is not None
    with Session(world.engine) as session:
        row = session.get(Slide, waiting.slide_id)
        assert row is not None and row.status == SlideStatus.SIGNED and row.signed_by == "rita"
    after_sign = world.snapshot()
    again = client.post(f"/v1/slides/{waiting.slide_id}/sign", headers=REVIEWER)
    assert again.status_code == 409 and "already signed by rita" in again.json()["detail"]
    assert _review(client, waiting.cell_ids[2], action="confirm").status_code == 409
    assert world.snapshot() == after_sign


def test_the_fhir_route_answers_fhir_json(client: TestClient, world: World) -> None:
    built = world.slide([CellSpec("LY")])
    answer = client.get(f"/v1/slides/{built.slide_id}/fhir", headers=SCIENTIST)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith(
        "application/fhir+json"
    )
    assert json.loads(answer.content)["resourceType"] == "DiagnosticReport"


def test_the_review_pages_and_their_assets_are_served(client: TestClient, world: World) -> None:
    built = world.slide([CellSpec("LY")])
    index = client.get("/")
    assert index.status_code == 200 and index.headers["content-type"].startswith("text/html")
    assert 'data-testid="slide-list"' in index.text
    page = client.get(f"/slides/{built.slide_id}")
    assert page.status_code == 200 and 'data-testid="sign"' in page.text
    assert 'data-testid="slide-status"' in page.text
    script = client.get("/static/app.js")
    assert script.status_code == 200 and "queue-cell" in script.text
    assert client.get("/static/style.css").status_code == 200
    assert client.get("/slides/not-an-id").status_code == 422


def test_health_here_and_metrics_on_their_own_port(client: TestClient) -> None:
    assert client.get("/health/live").json() == {"status": "live"}
    assert client.get("/health/ready").json() == {"status": "ready"}
    assert client.get("/metrics").status_code == 404  # not on the clients' port
    assert client.get("/docs").status_code == 404  # the CDN-fed page: only the document
    assert client.get("/openapi.json").status_code == 200
    metrics = TestClient(create_metrics_app(title="stainless-results"))
    assert "stainless_results_reviews_total" in metrics.get("/metrics").text


def test_openapi_documents_every_review_body(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    documented = 0
    for path, methods in spec["paths"].items():
        if not path.startswith(("/v1/slides", "/v1/cells", "/v1/me")):
            continue
        for operation in methods.values():
            answer = next(
                operation["responses"][c] for c in ("200", "201") if c in operation["responses"]
            )
            schema = answer.get("content", {}).get("application/json", {}).get("schema")
            if schema is None:  # images and the FHIR report have their own media types
                continue
            assert "$ref" in schema or "$ref" in schema.get("items", {}), (path, schema)
            documented += 1
    assert documented >= 7
    cell = spec["components"]["schemas"]["CellDetailOut"]["properties"]
    assert {"class", "probabilities", "confidence", "latest_review"} <= set(cell)


def test_a_blast_found_on_a_healthy_slide_turns_its_differential_clinical(
    client: TestClient, world: World
) -> None:
    built = world.slide([CellSpec("SNE"), CellSpec("SNE"), CellSpec("LY", NEEDS), CellSpec("SMU")])
    healthy = client.get(f"/v1/slides/{built.slide_id}", headers=SCIENTIST).json()
    assert healthy["vocabulary"] == "healthy"
    answer = _review(client, built.cell_ids[2], action="reclassify", new_class="BL")
    assert answer.status_code == 201, answer.text
    detail = client.get(f"/v1/slides/{built.slide_id}", headers=SCIENTIST).json()
    assert detail["vocabulary"] == "clinical" and len(detail["classes"]) == 12
    assert detail["class_names"]["BL"] == "blast"
    counts = detail["differential"]["counts"]
    assert (counts["NE"], counts["BL"], counts["SMU"]) == (2, 1, 1) and "SNE" not in counts
    assert detail["differential"]["percent"]["BL"] == pytest.approx(33.3)
    assert detail["flags"]["pathological"] == ["SMU", "BL"]
