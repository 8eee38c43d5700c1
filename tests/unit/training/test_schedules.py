from __future__ import annotations

import pytest

from stainless_training.schedules import Pass, PhasedSchedule, use_frequency_balancing


def test_thesis_phases_and_rates() -> None:
    schedule = PhasedSchedule.thesis()
    assert schedule.total_steps == 300_000
    assert schedule.learning_rate(0) == 1e-6
    assert schedule.learning_rate(49_999) == 1e-6
    assert schedule.learning_rate(50_000) == 1e-5
    assert not schedule.phase_at(199_999).supervised
    assert schedule.phase_at(200_000).supervised
    assert schedule.phase_at(10**9).name == "supervised"


def test_five_critic_steps_per_generator_step_in_algorithm_order() -> None:
    schedule = PhasedSchedule.thesis()
    early = [schedule.passes(step) for step in range(10)]
    assert early.count((Pass.CRITIC, Pass.GENERATOR)) == 2
    assert early.count((Pass.CRITIC,)) == 8
    assert schedule.passes(200_004) == (
        Pass.CRITIC,
        Pass.CLASSIFIER,
        Pass.SEGMENTOR,
        Pass.GENERATOR,
    )
    assert schedule.passes(200_003) == (Pass.CRITIC,)


def test_scaled_schedule_keeps_the_proportions() -> None:
    schedule = PhasedSchedule.scaled(600)
    assert [p.steps for p in schedule.phases] == [100, 300, 200]
    assert [p.learning_rate for p in schedule.phases] == [1e-6, 1e-5, 1e-5]
    with pytest.raises(ValueError, match="at least 6"):
        PhasedSchedule.scaled(3)


def test_frequency_balancing_only_in_the_last_fifth() -> None:
    flags = [use_frequency_balancing(e, epochs=100) for e in range(100)]
    assert flags.index(True) == 80 and all(flags[80:]) and not any(flags[:80])
    with pytest.raises(ValueError, match="epochs"):
        use_frequency_balancing(0, epochs=0)


def test_bad_schedules_are_refused() -> None:
    with pytest.raises(ValueError, match="unique"):
        PhasedSchedule(
            phases=(
                {"name": "a", "steps": 1, "learning_rate": 1e-5},
                {"name": "a", "steps": 1, "learning_rate": 1e-5},
            )
        )
    with pytest.raises(ValueError, match="non-negative"):
        PhasedSchedule.thesis().phase_at(-1)
