"""The FHIR DiagnosticReport validates against the R4B models and follows the reviews."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.observation import Observation

from stainless.domain.review import ReviewStatus

from .conftest import REVIEWER, SCIENTIST, CellSpec, World

NEEDS = ReviewStatus.NEEDS_REVIEW


def _report(client: TestClient, slide_id: str) -> dict[str, Any]:
    answer = client.get(f"/v1/slides/{slide_id}/fhir", headers=SCIENTIST)
    assert answer.status_code == 200, answer.text
    report: dict[str, Any] = answer.json()
    DiagnosticReport.model_validate(report)
    for contained in report["contained"]:
        Observation.model_validate(contained)
    return report


def _observation(report: dict[str, Any], code: str) -> dict[str, Any]:
    found = [o for o in report["contained"] if o["id"] == f"obs-{code}"]
    assert len(found) == 1
    return found[0]


def _codes(observation: dict[str, Any]) -> dict[str, str]:
    return {c["system"]: c["code"] for c in observation["code"]["coding"]}


def test_the_report_is_valid_preliminary_and_holds_one_observation_per_class(
    client: TestClient, world: World
) -> None:
    built = world.slide([CellSpec("SNE"), CellSpec("SNE"), CellSpec("LY"), CellSpec("SMU", NEEDS)])
    report = _report(client, built.slide_id)
    assert report["status"] == "preliminary" and "resultsInterpreter" not in report
    assert _codes(report) == {"http://loinc.org": "69738-3"}  # the differential panel
    assert [r["reference"] for r in report["result"]] == [
        f"#obs-{c}" for c in ("ART", "BA", "EO", "LY", "MO", "SNE", "SMU", "delta-whole-latent")
    ]
    sne = _observation(report, "SNE")
    assert _codes(sne) == {"http://loinc.org": "770-8", "urn:stainless:cell-class": "SNE"}
    assert sne["valueQuantity"] == {
        "value": 66.7,
        "unit": "%",
        "system": "http://unitsofmeasure.org",
        "code": "%",
    }
    assert sne["component"][0]["valueQuantity"]["value"] == 2
    assert sne["component"][0]["valueQuantity"]["code"] == "{cells}"
    smu = _observation(report, "SMU")
    assert _codes(smu) == {"urn:stainless:cell-class": "SMU"}  # no LOINC claimed for smudge cells
    assert "valueQuantity" not in smu and smu["component"][0]["valueQuantity"]["value"] == 1
    assert {
        k: _codes(_observation(report, k)).get("http://loinc.org") for k in ("BA", "EO", "LY", "MO")
    } == {
        "BA": "706-2",
        "EO": "713-8",
        "LY": "736-9",
        "MO": "5905-5",
    }
    assert "SMU" in report["conclusion"] and "1 cells still need review" in report["conclusion"]


def test_a_reclassification_shows_and_signing_makes_the_report_final(
    client: TestClient, world: World
) -> None:
    built = world.slide([CellSpec("SNE"), CellSpec("SNE", NEEDS, 0.3)])
    assert _observation(_report(client, built.slide_id), "SNE")["valueQuantity"]["value"] == 100.0
    reviewed = client.post(
        f"/v1/cells/{built.cell_ids[1]}/reviews",
        json={"action": "reclassify", "new_class": "MO"},
        headers=REVIEWER,
    )
    assert reviewed.status_code == 201
    report = _report(client, built.slide_id)
    assert _observation(report, "SNE")["valueQuantity"]["value"] == 50.0
    assert _observation(report, "MO")["valueQuantity"]["value"] == 50.0
    assert client.post(f"/v1/slides/{built.slide_id}/sign", headers=REVIEWER).status_code == 200
    final = _report(client, built.slide_id)
    assert final["status"] == "final"
    assert {o["status"] for o in final["contained"]} == {"final"}
    assert final["resultsInterpreter"] == [{"display": "rita"}]
    detail = client.get(f"/v1/slides/{built.slide_id}", headers=SCIENTIST).json()
    assert final["issued"] == detail["signed_at"]


def test_the_staining_confidence_is_reported_with_its_variant(
    client: TestClient, world: World
) -> None:
    built = world.slide(
        [CellSpec("SNE", confidence=0.5), CellSpec("LY", confidence=0.9), CellSpec(None)]
    )  # two cells with a δ, one pending without
    world.slide([CellSpec("MO", confidence=0.1)])  # another slide's cell is not counted
    report = _report(client, built.slide_id)
    delta = _observation(report, "delta-whole-latent")
    assert f"#{delta['id']}" in [r["reference"] for r in report["result"]]
    assert _codes(delta) == {"urn:stainless:measure": "staining-confidence"}
    assert "whole-latent" in delta["code"]["text"] and "chapter-7" in delta["method"]["text"]
    assert delta["valueQuantity"] == {"value": 0.7, "unit": "nat"}
    components = {c["code"]["coding"][0]["code"]: c["valueQuantity"] for c in delta["component"]}
    assert components["cell-count"]["value"] == 2 and components["lowest-delta"]["value"] == 0.5
    assert delta["note"] == [{"text": "Models: m1"}]


def test_abnormal_proportions_of_a_full_differential_are_concluded(
    client: TestClient, world: World
) -> None:
    built = world.slide([CellSpec("LY")] * 70 + [CellSpec("SNE")] * 30)
    conclusion = _report(client, built.slide_id)["conclusion"]
    assert "Abnormal proportions: NE low (30.0% < 40%), LY high (70.0% > 45%)." in conclusion
    few = world.slide([CellSpec("LY")] * 7 + [CellSpec("SNE")] * 3)
    assert "Abnormal" not in _report(client, few.slide_id)["conclusion"]


def test_flagged_classes_carry_an_interpretation(client: TestClient, world: World) -> None:
    built = world.slide([CellSpec("LY")] * 70 + [CellSpec("SNE")] * 30)
    report = _report(client, built.slide_id)

    def flag(code: str) -> str | None:
        found = _observation(report, code).get("interpretation")
        return None if found is None else str(found[0]["coding"][0]["code"])

    assert (flag("LY"), flag("SNE"), flag("MO")) == ("H", "L", None)
    clinical = world.slide([CellSpec("NE"), CellSpec("BL"), CellSpec("ERB"), CellSpec("ERB")])
    report = _report(client, clinical.slide_id)
    assert (flag("BL"), flag("ERB"), flag("NE")) == ("A", "A", None)
    assert _codes(_observation(report, "NE"))["http://loinc.org"] == "770-8"
    assert "http://loinc.org" not in _codes(_observation(report, "BL"))
    erythroblasts = _observation(report, "ERB")["valueQuantity"]
    assert (erythroblasts["value"], erythroblasts["code"]) == (100.0, "/100{WBCs}")


def test_a_cancelled_slide_reports_cancelled() -> None:
    from stainless.core.db.models import Slide, SlideStatus
    from stainless.domain.differential import differential
    from stainless.stages.review.fhir import diagnostic_report

    slide = Slide(
        scanner_id="s", external_id="S-1", patient_pseudonym="P-1", status=SlideStatus.CANCELLED
    )
    report = diagnostic_report(slide, differential([]))
    DiagnosticReport.model_validate(report)
    assert report["status"] == "cancelled"
    assert {obs["status"] for obs in report["contained"]} == {"cancelled"}
