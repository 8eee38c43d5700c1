"""Slide presets: which white cells a patient's smear holds.

A preset sets the phantom's ``class_frequencies``; acquisition presets
(``stainless.imaging.acquisition``) set how a lab images the smear, so the two combine.
``healthy`` and ``clinical-mix`` follow the class counts of the thesis' datasets (Tables 4.1
and 8.1); the disease patterns are illustrations of a typical picture, not measurements.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from stainless.imaging.phantom import DEFAULT_CLASS_FREQUENCIES

__all__ = ["SLIDES", "SlidePreset", "slide_frequencies"]


@dataclass(frozen=True)
class SlidePreset:
    description: str
    class_frequencies: Mapping[str, float]


def _normalised(counts: Mapping[str, float]) -> Mapping[str, float]:
    total = sum(counts.values())
    return MappingProxyType({code: value / total for code, value in counts.items()})


# Thesis Table 8.1, training column: 92 healthy donors and 83 patients.
_CLINICAL_COUNTS = {
    "NE": 105440,
    "EO": 4221,
    "BA": 1497,
    "MO": 11496,
    "LY": 40350,
    "RLY": 9152,
    "IG": 2172,
    "BL": 6050,
    "ALC": 449,
    "ERB": 1170,
    "SMU": 12138,
    "ART": 1219,
}

SLIDES: Mapping[str, SlidePreset] = MappingProxyType(
    {
        "healthy": SlidePreset(
            "the seven healthy classes, CellaVision counts of thesis Table 4.1 (the default)",
            DEFAULT_CLASS_FREQUENCIES,
        ),
        "clinical-mix": SlidePreset(
            "the twelve clinical classes as in thesis Table 8.1 (healthy donors and patients)",
            _normalised(_CLINICAL_COUNTS),
        ),
        "clinical-balanced": SlidePreset(
            "the twelve clinical classes equally often: training and evaluation cells for a "
            "twelve-class model (a data set, not a patient's smear)",
            _normalised(dict.fromkeys(_CLINICAL_COUNTS, 1.0)),
        ),
        "blast-rich": SlidePreset(
            "acute leukaemia: half the leukocytes blasts",
            _normalised({"BL": 50, "NE": 20, "LY": 14, "MO": 5, "ERB": 2, "SMU": 6, "ART": 3}),
        ),
        "left-shift": SlidePreset(
            "left shift (infection, myeloproliferative disease): band neutrophils and "
            "immature granulocytes",
            _normalised(
                {"NE": 55, "IG": 18, "MO": 8, "LY": 12, "EO": 2, "BA": 2, "ERB": 1, "ART": 2}
            ),
        ),
        "lymphoproliferative": SlidePreset(
            "lymphoid neoplasia (e.g. chronic lymphocytic leukaemia): abnormal lymphoid "
            "cells, lymphocytes and smudge cells",
            _normalised({"ALC": 35, "LY": 33, "SMU": 15, "NE": 13, "MO": 2, "ART": 2}),
        ),
        "reactive": SlidePreset(
            "viral infection: reactive lymphocytes",
            _normalised({"RLY": 25, "LY": 30, "NE": 35, "MO": 8, "ART": 2}),
        ),
    }
)


def slide_frequencies(name: str) -> dict[str, float]:
    """The class frequencies of slide preset ``name``; a clear error for any other name."""
    try:
        return dict(SLIDES[name].class_frequencies)
    except KeyError:
        raise ValueError(f"unknown slide preset {name!r}; known: {', '.join(SLIDES)}") from None
