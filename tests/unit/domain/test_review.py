"""Why a cell is sent to review."""

from __future__ import annotations

from stainless.domain.review import ReviewReason, review_reasons


def _reasons(**given: object) -> list[ReviewReason]:
    arguments: dict[str, object] = {
        "delta": 2.0,
        "delta_threshold": 1.0,
        "top_probability": 0.9,
        "probability_threshold": 0.5,
        "predicted_class": "LY",
        "pathological": frozenset({"SMU", "BL"}),
    }
    return review_reasons(**(arguments | given))  # type: ignore[arg-type]


def test_each_rule_gives_its_reason_and_none_gives_none() -> None:
    assert _reasons() == []
    assert _reasons(delta=0.5) == [ReviewReason.LOW_DELTA]
    assert _reasons(top_probability=0.4) == [ReviewReason.UNCERTAIN_CLASS]
    assert _reasons(predicted_class="SMU") == [ReviewReason.PATHOLOGICAL]
    assert _reasons(delta=0.5, top_probability=0.1, predicted_class="BL") == list(ReviewReason)


def test_without_a_probability_threshold_the_probability_says_nothing() -> None:
    assert _reasons(top_probability=0.01, probability_threshold=None) == []
    assert _reasons(top_probability=None) == []
