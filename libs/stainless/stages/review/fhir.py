"""The WBC differential of a slide as a FHIR R4 DiagnosticReport.

One Observation per cell class of the slide's vocabulary (healthy or clinical,
``stainless.domain.vocabulary``) is contained in the report and referenced from
``result`` as ``#obs-<CLASS>``. Each carries the class in the local code system
``urn:stainless:cell-class`` and, for the five normal leukocyte classes, the LOINC
code of "<cells>/100 leukocytes in Blood by Automated count" (the report is the
count of an automated classifier checked by an expert; LOINC has no method for
digital morphology; no LOINC code is claimed for the pathological classes).
Leukocyte observations carry the percentage (UCUM ``%``), erythroblasts their
number per 100 leukocytes (UCUM ``/100{WBCs}``); every observation carries the
number of cells in a component (UCUM ``{cells}``). Artefacts (ART) and smudge
cells (SMU) have neither: they are not in the denominator. A flagged class carries
an HL7 interpretation: ``A`` (abnormal) for a pathological class present, ``H`` or
``L`` for a proportion above or below the laboratory's rule. The report's code is the
LOINC panel 69738-3 "Differential panel, method unspecified - Blood" (LOINC has no
digital-morphology method), with the text saying how the count was made.

The confidence of the digital staining is one more contained Observation per δ variant
(``#obs-delta-<variant>``, code ``staining-confidence`` in ``urn:stainless:measure``): the
median δ of the slide's cells, with the variant and the model versions in its method
and note, and the number of cells and the lowest δ as components. δ is raw mutual
information in nats (no UCUM unit), comparable only within its variant.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from stainless.core.db.models import Slide, SlideStatus
from stainless.domain.differential import Differential, Flags
from stainless.domain.served import ConfidenceVariant
from stainless.domain.vocabulary import TO_CLINICAL, vocabulary_of
from stainless.stages.review.staining import StainingConfidence

CELL_CLASS_SYSTEM = "urn:stainless:cell-class"
MEASURE_SYSTEM = "urn:stainless:measure"
SLIDE_SYSTEM = "urn:stainless:slide"
PATIENT_SYSTEM = "urn:stainless:patient-pseudonym"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"

LOINC_PER_100_LEUKOCYTES: dict[str, tuple[str, str]] = {
    "BA": ("706-2", "Basophils/100 leukocytes in Blood by Automated count"),
    "EO": ("713-8", "Eosinophils/100 leukocytes in Blood by Automated count"),
    "LY": ("736-9", "Lymphocytes/100 leukocytes in Blood by Automated count"),
    "MO": ("5905-5", "Monocytes/100 leukocytes in Blood by Automated count"),
    "SNE": ("770-8", "Neutrophils/100 leukocytes in Blood by Automated count"),
    "NE": ("770-8", "Neutrophils/100 leukocytes in Blood by Automated count"),
}
"""SNE: the healthy classifier has no band class, so every neutrophil it counts is
segmented; NE: every neutrophil, segmented or band."""
DIFFERENTIAL_PANEL = ("69738-3", "Differential panel, method unspecified - Blood")
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
_INTERPRETATIONS = {"A": "Abnormal", "H": "High", "L": "Low"}

_HEMATOLOGY = {
    "coding": [
        {
            "system": "http://terminology.hl7.org/CodeSystem/v2-0074",
            "code": "HM",
            "display": "Hematology",
        }
    ]
}
_LABORATORY = {
    "coding": [
        {
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "laboratory",
            "display": "Laboratory",
        }
    ]
}


def _instant(moment: datetime) -> str:
    """An ISO instant; SQLite hands timestamps back without zone, they are UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.isoformat()


def _interpretation(code: str, flags: Flags | None) -> str | None:
    if flags is None:
        return None
    for found in flags.abnormal:  # rules name clinical classes: NE covers SNE
        if found.code == TO_CLINICAL.get(code, code):
            return "H" if found.direction == "high" else "L"
    return "A" if code in flags.pathological else None


def _observation(
    code: str,
    differential: Differential,
    flags: Flags | None,
    *,
    status: str,
    subject: dict[str, Any],
) -> dict[str, Any]:
    known = vocabulary_of(differential.vocabulary).names.get(code, code)
    name = known[:1].upper() + known[1:]
    codings: list[dict[str, str]] = []
    if code in LOINC_PER_100_LEUKOCYTES:
        loinc, display = LOINC_PER_100_LEUKOCYTES[code]
        codings.append({"system": LOINC, "code": loinc, "display": display})
    codings.append({"system": CELL_CLASS_SYSTEM, "code": code, "display": name})
    observation: dict[str, Any] = {
        "resourceType": "Observation",
        "id": f"obs-{code}",
        "status": status,
        "category": [_LABORATORY],
        "code": {"coding": codings, "text": name},
        "subject": subject,
        "component": [
            _measure(
                "cell-count",
                f"{name}s counted",
                differential.counts.get(code, 0),
                "cells",
                "{cells}",
            )
        ],
    }
    percent = differential.percent.get(code)
    per_100 = differential.per_100_leukocytes.get(code)
    if percent is not None:
        observation["valueQuantity"] = {"value": percent, "unit": "%", "system": UCUM, "code": "%"}
    elif per_100 is not None:
        observation["valueQuantity"] = {
            "value": per_100,
            "unit": "/100 leukocytes",
            "system": UCUM,
            "code": "/100{WBCs}",
        }
    if (flag := _interpretation(code, flags)) is not None:
        coding = {"system": INTERPRETATION, "code": flag, "display": _INTERPRETATIONS[flag]}
        observation["interpretation"] = [{"coding": [coding]}]
    return observation


VARIANT_METHODS: dict[str, str] = {
    ConfidenceVariant.DISENTANGLED: (
        "chapter-6 δ: noise on the structure and style codes (Algorithm 2)"
    ),
    ConfidenceVariant.WHOLE_LATENT: (
        "chapter-7 δ: noise on the latent code, masked to the white cell"
    ),
    ConfidenceVariant.WHOLE_LATENT_UNMASKED: (
        "chapter-7 δ: noise on the whole latent code, no mask (model 3)"
    ),
}


def _measure(code: str, text: str, value: float, unit: str, ucum: str | None) -> dict[str, Any]:
    """A component in ``urn:stainless:measure``; ``ucum`` None for a unit UCUM lacks."""
    quantity: dict[str, Any] = {"value": value, "unit": unit}
    if ucum is not None:
        quantity |= {"system": UCUM, "code": ucum}
    return {
        "code": {"coding": [{"system": MEASURE_SYSTEM, "code": code}], "text": text},
        "valueQuantity": quantity,
    }


def _confidence_observation(
    staining: StainingConfidence, *, status: str, subject: dict[str, Any]
) -> dict[str, Any]:
    method = VARIANT_METHODS.get(staining.variant, "variant not recorded")
    return {
        "resourceType": "Observation",
        "id": f"obs-delta-{staining.variant}",
        "status": status,
        "category": [_LABORATORY],
        "code": {
            "coding": [{"system": MEASURE_SYSTEM, "code": "staining-confidence"}],
            "text": f"Digital staining confidence δ ({staining.variant} variant), median",
        },
        "subject": subject,
        "method": {"text": f"{staining.variant}: {method}; raw mutual information in nats"},
        "note": [{"text": "Models: " + ", ".join(staining.model_versions)}],
        "valueQuantity": {"value": round(staining.median_delta, 4), "unit": "nat"},
        "component": [
            _measure("cell-count", "cells with a δ", staining.cells, "cells", "{cells}"),
            _measure("lowest-delta", "lowest δ", round(staining.lowest_delta, 4), "nat", None),
        ],
    }


def diagnostic_report(
    slide: Slide,
    differential: Differential,
    flags: Flags | None = None,
    *,
    staining: tuple[StainingConfidence, ...] = (),
    issued: datetime | None = None,
) -> dict[str, Any]:
    """The slide's report as FHIR R4 JSON: ``final`` once signed, ``cancelled`` when its
    scanner withdrew it, else ``preliminary``; with the staining confidence of each δ
    variant in ``staining``."""
    signed = slide.status == SlideStatus.SIGNED
    status = {SlideStatus.SIGNED: "final", SlideStatus.CANCELLED: "cancelled"}.get(
        slide.status, "preliminary"
    )
    subject = {
        "identifier": {"system": PATIENT_SYSTEM, "value": slide.patient_pseudonym},
        "display": slide.patient_pseudonym,
    }
    classes = vocabulary_of(differential.vocabulary).classes
    codes = list(classes) + sorted(set(differential.counts) - set(classes))
    observations = [
        _observation(code, differential, flags, status=status, subject=subject) for code in codes
    ] + [_confidence_observation(each, status=status, subject=subject) for each in staining]
    report: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "id": slide.id,
        "identifier": [
            {"system": SLIDE_SYSTEM, "value": slide.id},
            {"system": f"{SLIDE_SYSTEM}:external", "value": slide.external_id},
        ],
        "status": status,
        "category": [_HEMATOLOGY],
        "code": {
            "coding": [
                {"system": LOINC, "code": DIFFERENTIAL_PANEL[0], "display": DIFFERENTIAL_PANEL[1]}
            ],
            "text": "White blood cell differential (digital staining, expert reviewed)",
        },
        "subject": subject,
        "effectiveDateTime": _instant(slide.created_at),
        "issued": _instant(slide.signed_at if signed and slide.signed_at else issued or _now()),
        "contained": observations,
        "result": [{"reference": f"#{obs['id']}"} for obs in observations],
        "conclusion": _conclusion(differential, flags),
    }
    if signed and slide.signed_by:
        report["resultsInterpreter"] = [{"display": slide.signed_by}]
    return report


def canonical_json(report: dict[str, Any]) -> bytes:
    """The report's bytes as served and hashed: sorted keys, no spaces, UTF-8."""
    return json.dumps(report, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _now() -> datetime:
    return datetime.now(UTC)


def _conclusion(differential: Differential, flags: Flags | None) -> str:
    parts = [
        f"{differential.leukocytes} leukocytes differentiated "
        f"({differential.counted} cells counted, {differential.poor_quality} of poor quality)."
    ]
    if flags and flags.pathological:
        parts.append(f"Present: {', '.join(flags.pathological)}.")
    if flags and flags.abnormal:
        parts.append(f"Abnormal proportions: {', '.join(map(str, flags.abnormal))}.")
    if flags and flags.needs_review:
        parts.append(f"{flags.needs_review} cells still need review.")
    return " ".join(parts)
