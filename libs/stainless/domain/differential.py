"""The white-cell differential of a slide and its flags.

A cell enters as its *effective class* (a reviewer's reclassification, else the
prediction; ``None`` while no prediction exists: *pending*) and its review status. A
cell marked poor quality is left out of the differential.

The conventions are those of a manual 100- or 200-cell differential (ICSH 2014
recommendations on leukocyte morphology; CLSI H20-A2): percentages of the leukocytes
counted; erythroblasts per 100 leukocytes, not in the denominator; smudge cells and
artefacts counted apart. Each percentage carries its 95% binomial interval (Wilson),
the imprecision H20-A2 tabulates after Rümke for a count of that size.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from stainless.domain.review import ReviewStatus
from stainless.domain.statistics import wilson_interval
from stainless.domain.vocabulary import HEALTHY, PATHOLOGICAL, Vocabulary, clinical_class

__all__ = [
    "Abnormal",
    "ClinicalRules",
    "Differential",
    "Flags",
    "ProportionRule",
    "ReviewedCell",
    "differential",
    "flags",
]


class ReviewedCell(Protocol):
    """What the differential needs of a cell."""

    @property
    def effective_class(self) -> str | None: ...

    @property
    def review_status(self) -> ReviewStatus: ...


@dataclass(frozen=True)
class Differential:
    """Counts per class and percentages over the leukocytes.

    ``counts`` holds every class of the vocabulary (zeros included; a class code unknown
    to it is counted too). ``percent`` holds only the vocabulary's leukocyte classes, over
    their sum, with its 95% interval in ``percent_interval``; ``per_100_leukocytes`` the
    classes counted per 100 leukocytes (erythroblasts). Artefacts and smudge cells are
    counted but are not leukocytes that can be differentiated, so they are in neither.
    Percentages are ``None`` when no leukocyte was counted.
    """

    counts: dict[str, int]
    percent: dict[str, float | None]
    leukocytes: int
    counted: int
    poor_quality: int
    pending: int
    needs_review: int
    vocabulary: str = HEALTHY.name
    percent_interval: dict[str, tuple[float, float] | None] = field(default_factory=dict)
    per_100_leukocytes: dict[str, float | None] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.counted + self.poor_quality + self.pending


@dataclass(frozen=True)
class ProportionRule:
    """An abnormal proportion of a normal class: its percentage outside ``[low, high]``.

    ``code`` is a clinical class (``NE`` covers the healthy vocabulary's ``SNE``).
    """

    code: str
    low: float | None = None
    high: float | None = None

    def __post_init__(self) -> None:
        clinical_class(self.code)
        if self.low is None and self.high is None:
            raise ValueError(f"a rule for {self.code} needs a low or a high limit")
        if self.low is not None and self.high is not None and self.low > self.high:
            raise ValueError(f"{self.code}: low limit {self.low} above high limit {self.high}")


@dataclass(frozen=True)
class ClinicalRules:
    """What a laboratory flags: pathological classes present, abnormal proportions once at
    least ``count`` leukocytes were differentiated (100 or 200)."""

    pathological: tuple[str, ...] = PATHOLOGICAL
    proportions: tuple[ProportionRule, ...] = ()
    count: int = 100


@dataclass(frozen=True)
class Abnormal:
    """A proportion outside its rule's limits."""

    code: str
    percent: float
    direction: Literal["high", "low"]
    limit: float

    def __str__(self) -> str:
        sign = ">" if self.direction == "high" else "<"
        return f"{self.code} {self.direction} ({self.percent:.1f}% {sign} {self.limit:g}%)"


@dataclass(frozen=True)
class Flags:
    pathological: list[str] = field(default_factory=list)
    needs_review: int = 0
    pending: int = 0
    abnormal: list[Abnormal] = field(default_factory=list)
    proportions_assessed: bool = False


def _percent_interval(k: int, n: int) -> tuple[float, float]:
    low, high = wilson_interval(k, n)
    return round(100 * low, 1), round(100 * high, 1)


def differential(cells: Iterable[ReviewedCell], vocabulary: Vocabulary = HEALTHY) -> Differential:
    """The differential of a slide's cells in a vocabulary's classes."""
    counts: Counter[str] = Counter(dict.fromkeys(vocabulary.classes, 0))
    poor = pending = needs_review = counted = 0
    for cell in cells:
        if cell.review_status is ReviewStatus.NEEDS_REVIEW:
            needs_review += 1
        if cell.effective_class is None:
            pending += 1
        elif cell.review_status is ReviewStatus.POOR_QUALITY:
            poor += 1
        else:
            counts[vocabulary.code_of(cell.effective_class)] += 1
            counted += 1
    leukocytes = sum(counts[code] for code in vocabulary.leukocytes)

    def per(codes: Iterable[str], scale: float) -> dict[str, float | None]:
        return {
            code: (round(scale * counts[code] / leukocytes, 1) if leukocytes else None)
            for code in codes
        }

    return Differential(
        counts=dict(counts),
        percent=per(vocabulary.leukocytes, 100.0),
        leukocytes=leukocytes,
        counted=counted,
        poor_quality=poor,
        pending=pending,
        needs_review=needs_review,
        vocabulary=vocabulary.name,
        percent_interval={
            code: (_percent_interval(counts[code], leukocytes) if leukocytes else None)
            for code in vocabulary.leukocytes
        },
        per_100_leukocytes=per(vocabulary.per_100_leukocytes, 100.0),
    )


def flags(diff: Differential, rules: ClinicalRules) -> Flags:
    """A flag per pathological class present, abnormal proportions of the normal classes
    (only once ``rules.count`` leukocytes were differentiated: a smaller count is too
    imprecise to call a proportion abnormal), and the cells awaiting review or a class."""
    present = [code for code in rules.pathological if diff.counts.get(code, 0) > 0]
    assessed = diff.leukocytes >= rules.count
    abnormal: list[Abnormal] = []
    if assessed:
        by_clinical: dict[str, float] = {}
        for code, value in diff.percent.items():
            key = clinical_class(code)
            by_clinical[key] = by_clinical.get(key, 0.0) + (value or 0.0)
        for rule in rules.proportions:
            value = round(by_clinical.get(rule.code, 0.0), 1)
            if rule.high is not None and value > rule.high:
                abnormal.append(Abnormal(rule.code, value, "high", rule.high))
            elif rule.low is not None and value < rule.low:
                abnormal.append(Abnormal(rule.code, value, "low", rule.low))
    return Flags(
        pathological=present,
        needs_review=diff.needs_review,
        pending=diff.pending,
        abnormal=abnormal,
        proportions_assessed=assessed,
    )
