from __future__ import annotations

import pytest

from stainless.domain.cells import CLASS_ORDER, LEUKOCYTES
from stainless.domain.vocabulary import (
    CLINICAL,
    HEALTHY,
    ClinicalClass,
    Vocabulary,
    clinical_class,
    vocabulary_for,
    vocabulary_of,
)


def test_the_twelve_clinical_classes_and_how_the_differential_treats_them() -> None:
    assert CLINICAL.classes == tuple(c.value for c in ClinicalClass) and len(CLINICAL.classes) == 12
    assert CLINICAL.per_100_leukocytes == ("ERB",)
    assert CLINICAL.apart == ("SMU", "ART")
    assert set(CLINICAL.pathological) == {"RLY", "IG", "BL", "ALC", "ERB", "SMU"}
    assert not set(CLINICAL.pathological) & {"NE", "EO", "BA", "MO", "LY"}


def test_the_healthy_seven_fold_into_the_clinical_classes() -> None:
    assert HEALTHY.classes == CLASS_ORDER and HEALTHY.leukocytes == LEUKOCYTES
    assert {code: clinical_class(code) for code in HEALTHY.classes} == {
        "ART": "ART",
        "BA": "BA",
        "EO": "EO",
        "LY": "LY",
        "MO": "MO",
        "SNE": "NE",
        "SMU": "SMU",
    }
    assert clinical_class("BNE") == "NE"  # band neutrophils too
    assert all(clinical_class(code) == code for code in CLINICAL.classes)
    assert {clinical_class(code) for code in HEALTHY.leukocytes} <= set(CLINICAL.leukocytes)
    with pytest.raises(ValueError, match="unknown cell class 'PLT'"):
        clinical_class("PLT")


def test_every_code_has_a_name_and_vocabularies_are_checked() -> None:
    assert HEALTHY.names["SNE"] == "segmented neutrophil"
    assert CLINICAL.names["ALC"] == "abnormal lymphoid cell"
    assert vocabulary_of("clinical") is CLINICAL
    with pytest.raises(ValueError, match="unknown class vocabulary 'x'"):
        vocabulary_of("x")
    with pytest.raises(ValueError, match="not in the vocabulary"):
        Vocabulary("bad", {"A": "a"}, leukocytes=("B",), per_100_leukocytes=(), pathological=())
    with pytest.raises(ValueError, match="both a leukocyte and per 100"):
        Vocabulary("bad", {"A": "a"}, leukocytes=("A",), per_100_leukocytes=("A",), pathological=())


def test_a_slide_is_clinical_once_a_class_outside_the_healthy_seven_appears() -> None:
    assert vocabulary_for(["SNE", "LY", None]) is HEALTHY
    assert vocabulary_for([]) is HEALTHY
    assert vocabulary_for(["SNE", "BL"]) is CLINICAL
    assert CLINICAL.fold["SNE"] == "NE" and HEALTHY.fold == {}
