"""Blinded validation studies through the results API: drawing, blinding, labels, report."""

from __future__ import annotations

from collections import Counter

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from stainless.core.audit import audit_trail
from stainless.stages.review.study import study_labels

from .conftest import ADMIN, REVIEWER, SCIENTIST, Built, CellSpec, World

UNKNOWN = "00000000-0000-4000-8000-000000000000"

# (truth, automatic prediction) of the eight cells of the worked example
CELLS = [
    ("LY", "LY"),
    ("LY", "LY"),
    ("LY", "MO"),
    ("MO", "MO"),
    ("MO", "LY"),
    ("SNE", "SNE"),
    ("SNE", "SNE"),
    ("SMU", "SMU"),
]
# what each expert answers for the cells above, in the same order
RITA = ["LY", "LY", "LY", "LY", "MO", "PQ", "SNE", "SMU"]
ADA = ["MO", "LY", "LY", "MO", "MO", "SNE", "SNE", "SMU"]


def _slide(world: World) -> Built:
    return world.slide([CellSpec(predicted, truth=truth) for truth, predicted in CELLS])


def _create(client: TestClient, slide_ids: list[str], **body: object):  # type: ignore[no-untyped-def]
    payload = {"name": "acceptance", "slide_ids": slide_ids, "cells": 8, "seed": 3, **body}
    return client.post("/v1/studies", json=payload, headers=SCIENTIST)


def _label_all(client: TestClient, world: World, study_id: str, built: Built) -> None:
    cell_of = {
        item.id: item.cell_id for item in study_labels(world.engine, study_id=study_id).items
    }
    for headers, answers in ((REVIEWER, RITA), (ADMIN, ADA)):
        mine = client.get(f"/v1/studies/{study_id}/items", headers=headers).json()
        for item in mine["items"]:
            answer = answers[built.cell_ids.index(cell_of[item["id"]])]
            saved = client.put(
                f"/v1/studies/{study_id}/items/{item['id']}/label",
                json={"label": answer},
                headers=headers,
            )
            assert saved.status_code == 200, saved.text


def test_a_study_is_drawn_stratified_from_the_cells_with_an_image_and_a_reference(
    client: TestClient, world: World
) -> None:
    built = world.slide(
        [CellSpec("LY", truth="LY") for _ in range(6)]
        + [CellSpec("MO", truth="MO") for _ in range(2)]
        + [CellSpec(None, truth="LY"), CellSpec("LY")]  # no stained image; no reference
    )
    answer = _create(client, [built.slide_id], cells=6)
    assert answer.status_code == 201, answer.text
    drawn = answer.json()
    assert drawn["items"] == 6 and drawn["labelled"] == {}
    assert drawn["left_out"] == {"no stained image": 1, "no reference class": 1}
    assert drawn["vocabulary"] == "healthy" and drawn["reference"] == "phantom ground truth"
    assert [c["code"] for c in drawn["classes"]] == [
        "ART",
        "BA",
        "EO",
        "LY",
        "MO",
        "SNE",
        "SMU",
        "PQ",
    ]
    items = study_labels(world.engine, study_id=drawn["id"]).items
    assert Counter(item.reference_class for item in items) == {"LY": 4, "MO": 2}
    assert [a.action for a in audit_trail(world.engine, target=f"study:{drawn['id']}")] == [
        "study-create"
    ]


def test_a_clinical_reference_makes_a_clinical_study_and_folds_neutrophils(
    client: TestClient, world: World
) -> None:
    built = world.slide([CellSpec("SNE", truth="BL"), CellSpec("SNE", truth="SNE")])
    drawn = _create(client, [built.slide_id], cells=2).json()
    assert drawn["vocabulary"] == "clinical"
    assert [c["code"] for c in drawn["classes"]][:2] == ["NE", "EO"]
    items = study_labels(world.engine, study_id=drawn["id"]).items
    assert sorted((i.reference_class, i.automatic_class) for i in items) == [
        ("BL", "NE"),
        ("NE", "NE"),
    ]


def test_drawing_refusals_say_why_and_write_nothing(client: TestClient, world: World) -> None:
    built = _slide(world)
    assert _create(client, [built.slide_id], cells=9).status_code == 422  # only 8
    assert _create(client, [UNKNOWN]).status_code == 404
    assert _create(client, []).status_code == 422
    refused = client.post(
        "/v1/studies",
        json={"name": "x", "slide_ids": [built.slide_id], "cells": 2},
        headers=REVIEWER,
    )
    assert refused.status_code == 403 and "scientist" in refused.json()["detail"]
    assert client.get("/v1/studies", headers=SCIENTIST).json() == []
    assert _create(client, [built.slide_id]).status_code == 201
    again = _create(client, [built.slide_id])
    assert again.status_code == 409 and again.json()["error"] == "conflict"


def test_an_expert_sees_only_images_in_an_order_of_their_own(
    client: TestClient, world: World
) -> None:
    built = _slide(world)
    study_id = _create(client, [built.slide_id]).json()["id"]
    rita = client.get(f"/v1/studies/{study_id}/items", headers=REVIEWER).json()
    ada = client.get(f"/v1/studies/{study_id}/items", headers=ADMIN).json()
    assert rita["expert"] == "rita" and rita["labelled"] == 0
    assert set(rita["items"][0]) == {"id", "image", "label"}  # no class, no cell, no δ
    assert sorted(i["id"] for i in rita["items"]) == sorted(i["id"] for i in ada["items"])
    assert [i["id"] for i in rita["items"]] != [i["id"] for i in ada["items"]]
    assert [i["id"] for i in rita["items"]] == [
        i["id"]
        for i in client.get(f"/v1/studies/{study_id}/items", headers=REVIEWER).json()["items"]
    ]
    png = client.get(rita["items"][0]["image"], headers=REVIEWER)
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert cv2.imdecode(np.frombuffer(png.content, np.uint8), cv2.IMREAD_COLOR).shape == (32, 32, 3)
    assert client.get(f"/v1/studies/{study_id}/items", headers=SCIENTIST).status_code == 403
    assert client.get(f"/v1/studies/{study_id}/report", headers=REVIEWER).status_code == 403
    assert client.get(f"/v1/studies/{UNKNOWN}/items", headers=REVIEWER).status_code == 404


def test_labels_are_checked_saved_per_expert_and_replaced(client: TestClient, world: World) -> None:
    built = _slide(world)
    study_id = _create(client, [built.slide_id]).json()["id"]
    other = _create(client, [built.slide_id], name="other").json()["id"]
    item = client.get(f"/v1/studies/{study_id}/items", headers=REVIEWER).json()["items"][0]
    url = f"/v1/studies/{study_id}/items/{item['id']}/label"
    bad = client.put(url, json={"label": "BL"}, headers=REVIEWER)  # not a class of this study
    assert bad.status_code == 422 and "PQ" in bad.json()["detail"]
    assert client.put(url, json={"label": "LY", "x": 1}, headers=REVIEWER).status_code == 422
    foreign = f"/v1/studies/{other}/items/{item['id']}/label"
    assert client.put(foreign, json={"label": "LY"}, headers=REVIEWER).status_code == 404
    assert client.put(url, json={"label": "LY"}, headers=SCIENTIST).status_code == 403
    assert client.put(url, json={"label": "MO"}, headers=REVIEWER).json()["label"] == "MO"
    assert client.put(url, json={"label": "PQ"}, headers=REVIEWER).json()["label"] == "PQ"
    rita = client.get(f"/v1/studies/{study_id}/items", headers=REVIEWER).json()
    assert rita["labelled"] == 1 and rita["items"][0]["label"] == "PQ"
    ada = client.get(f"/v1/studies/{study_id}/items", headers=ADMIN).json()
    assert ada["labelled"] == 0 and all(i["label"] is None for i in ada["items"])
    listed = client.get("/v1/studies", headers=REVIEWER).json()
    assert {s["name"]: s["labelled"] for s in listed} == {"acceptance": {"rita": 1}, "other": {}}


def test_the_report_gives_confusion_accuracy_and_kappa_worked_out_by_hand(
    client: TestClient, world: World
) -> None:
    built = _slide(world)
    study_id = _create(client, [built.slide_id]).json()["id"]
    _label_all(client, world, study_id, built)
    report = client.get(f"/v1/studies/{study_id}/report", headers=SCIENTIST).json()
    raters = {r["name"]: r for r in report["raters"]}
    assert list(raters) == ["ada", "rita", "automatic classifier"]
    rita, ada, automatic = raters["rita"], raters["ada"], raters["automatic classifier"]
    assert (rita["accuracy"], ada["accuracy"], automatic["accuracy"]) == (0.75, 0.875, 0.75)
    assert rita["poor_quality"] == 1 / 8 and report["poor_quality"] == 1 / 16
    assert rita["confusion"]["SNE"] == {
        "ART": 0, "BA": 0, "EO": 0, "LY": 0, "MO": 0, "SNE": 1, "SMU": 0, "PQ": 1
    }  # fmt: skip
    assert rita["confusion"]["MO"]["LY"] == 1 and ada["confusion"]["LY"]["MO"] == 1
    assert set(rita["confusion"]) == {"LY", "MO", "SNE", "SMU"}  # the reference's classes
    assert rita["recall"]["MO"] == 0.5 and rita["recall"]["BA"] is None
    kappa = {(a["first"], a["second"]): (a["cells"], a["kappa"]) for a in report["agreements"]}
    # rita/ada agree on 5 of 8; chance 14/64 from their marginals: (5/8 - 14/64) / (1 - 14/64)
    assert kappa[("ada", "rita")] == (8, pytest.approx(0.52))
    # rita/automatic agree on 4 of 8; chance 17/64
    assert kappa[("rita", "automatic classifier")] == (
        8,
        pytest.approx((0.5 - 17 / 64) / (47 / 64)),
    )
    page = client.get(f"/v1/studies/{study_id}/report.html", headers=ADMIN)
    assert page.status_code == 200 and "script-src" not in page.headers["content-security-policy"]
    assert "style-src 'unsafe-inline'" in page.headers["content-security-policy"]
    assert "data-rater='rita'" in page.text and "data-kappa='0.52" in page.text


def test_the_study_page_is_served(client: TestClient, world: World) -> None:
    page = client.get(f"/studies/{UNKNOWN}")
    assert page.status_code == 200 and 'data-testid="study-cell"' in page.text
    assert "label-" in client.get("/static/study.js").text
    assert "function api(" in client.get("/static/common.js").text
    assert client.get("/studies/not-an-id").status_code == 422
