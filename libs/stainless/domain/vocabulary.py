"""The class vocabularies: the seven healthy classes and the twelve clinical ones.

The healthy vocabulary is the one of thesis chapters 5–7 (CellaVision codes). The clinical
vocabulary is the one of the clinical study (thesis ch. 8.1.2, Table 8.1): the five normal
leukocytes, the pathological cells of haematological disease, smudges and artefacts. A
vocabulary says which of its classes the differential counts as leukocytes (the
denominator of its percentages), which it reports per 100 leukocytes (erythroblasts,
ICSH) and which are pathological.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from stainless.domain.cells import CLASS_ORDER, LEUKOCYTES

__all__ = [
    "CLINICAL",
    "HEALTHY",
    "PATHOLOGICAL",
    "REVIEW_CLASSES",
    "TO_CLINICAL",
    "VOCABULARIES",
    "ClinicalClass",
    "Vocabulary",
    "clinical_class",
    "vocabulary_for",
    "vocabulary_of",
]


class ClinicalClass(StrEnum):
    """The twelve classes of the clinical study (thesis Table 8.1)."""

    NE = "NE"  # neutrophil, segmented or band
    EO = "EO"  # eosinophil
    BA = "BA"  # basophil
    MO = "MO"  # monocyte
    LY = "LY"  # lymphocyte
    RLY = "RLY"  # reactive lymphocyte
    IG = "IG"  # immature granulocyte: promyelocyte, myelocyte, metamyelocyte
    BL = "BL"  # blast, myeloid or lymphoid
    ALC = "ALC"  # abnormal lymphoid cell
    ERB = "ERB"  # erythroblast (nucleated red cell)
    SMU = "SMU"  # smudge cell
    ART = "ART"  # artefact: not a cell


@dataclass(frozen=True)
class Vocabulary:
    """A set of cell classes and how the differential treats each.

    Attributes:
        name: ``healthy`` or ``clinical``.
        names: code → name, in display order (the review page's hotkeys follow it).
        leukocytes: the classes whose sum is the denominator of the percentages.
        per_100_leukocytes: classes reported per 100 leukocytes, outside the percentages.
        pathological: classes flagged when present (a site may set its own).
        fold: codes of another vocabulary counted as one of this one's (SNE as NE).
    """

    name: str
    names: Mapping[str, str]
    leukocytes: tuple[str, ...]
    per_100_leukocytes: tuple[str, ...]
    pathological: tuple[str, ...]
    fold: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = set(self.leukocytes + self.per_100_leukocytes + self.pathological) - set(
            self.names
        )
        if unknown:
            raise ValueError(f"{self.name}: classes not in the vocabulary: {sorted(unknown)}")
        if set(self.leukocytes) & set(self.per_100_leukocytes):
            raise ValueError(f"{self.name}: a class is both a leukocyte and per 100 leukocytes")

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.names)

    @property
    def apart(self) -> tuple[str, ...]:
        """Classes counted but in neither the percentages nor per 100 leukocytes."""
        counted = set(self.leukocytes) | set(self.per_100_leukocytes)
        return tuple(code for code in self.names if code not in counted)

    def code_of(self, code: str) -> str:
        """The class of this vocabulary that ``code`` counts as (SNE as NE in the clinical)."""
        return self.fold.get(code, code)


HEALTHY = Vocabulary(
    name="healthy",
    names=MappingProxyType(
        dict(
            zip(
                CLASS_ORDER,
                (
                    "artefact",
                    "basophil",
                    "eosinophil",
                    "lymphocyte",
                    "monocyte",
                    "segmented neutrophil",
                    "smudge cell",
                ),
                strict=True,
            )
        )
    ),
    leukocytes=LEUKOCYTES,
    per_100_leukocytes=(),
    pathological=("SMU",),
)

TO_CLINICAL: Mapping[str, str] = MappingProxyType(
    {code: code for code in ClinicalClass} | {"SNE": "NE", "BNE": "NE"}
)
"""Every known class code → its clinical class (the healthy seven, band neutrophils, and
the clinical codes themselves): segmented and band neutrophils fold into neutrophil."""

CLINICAL = Vocabulary(
    name="clinical",
    names=MappingProxyType(
        {
            "NE": "neutrophil",
            "EO": "eosinophil",
            "BA": "basophil",
            "MO": "monocyte",
            "LY": "lymphocyte",
            "RLY": "reactive lymphocyte",
            "IG": "immature granulocyte",
            "BL": "blast",
            "ALC": "abnormal lymphoid cell",
            "ERB": "erythroblast",
            "SMU": "smudge cell",
            "ART": "artefact",
        }
    ),
    leukocytes=("NE", "EO", "BA", "MO", "LY", "RLY", "IG", "BL", "ALC"),
    per_100_leukocytes=("ERB",),
    pathological=("RLY", "IG", "BL", "ALC", "ERB", "SMU"),
    fold=TO_CLINICAL,
)

VOCABULARIES: Mapping[str, Vocabulary] = MappingProxyType(
    {vocabulary.name: vocabulary for vocabulary in (HEALTHY, CLINICAL)}
)

PATHOLOGICAL: tuple[str, ...] = tuple(
    dict.fromkeys((*HEALTHY.pathological, *CLINICAL.pathological))
)
"""The pathological classes of both vocabularies: flagged and reviewed by default."""

REVIEW_CLASSES: tuple[str, ...] = tuple(dict.fromkeys((*HEALTHY.classes, *CLINICAL.classes)))
"""Every class a reviewer may give a cell: a blast on a slide the healthy model classified
is still a blast."""


def clinical_class(code: str) -> str:
    """The clinical class of a healthy or clinical class code."""
    try:
        return TO_CLINICAL[code]
    except KeyError:
        raise ValueError(
            f"unknown cell class {code!r}: expected one of {', '.join(TO_CLINICAL)}"
        ) from None


def vocabulary_for(codes: Iterable[str | None]) -> Vocabulary:
    """The vocabulary of a slide's classes: healthy while every class is a healthy one,
    else clinical (its healthy classes folded in)."""
    return HEALTHY if set(codes) - {None} <= set(HEALTHY.classes) else CLINICAL


def vocabulary_of(name: str) -> Vocabulary:
    """The vocabulary called ``name``; a clear error for any other name."""
    try:
        return VOCABULARIES[name]
    except KeyError:
        raise ValueError(
            f"unknown class vocabulary {name!r}: expected one of {', '.join(VOCABULARIES)}"
        ) from None
