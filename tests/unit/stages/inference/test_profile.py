"""The inference stage's profile: seconds per phase, micro-batch sizes, per-batch figures."""

from __future__ import annotations

import pytest

from stainless.stages.inference.profile import Phase, StageProfile


def test_the_profile_adds_up_phases_and_averages_them_over_micro_batches() -> None:
    profile = StageProfile()
    profile.add(Phase.INFER, 0.3)
    profile.add(Phase.INFER, 0.1)
    profile.add(Phase.ENCODE, 0.02)
    profile.batch(16)
    profile.batch(13)
    with profile.phase(Phase.QUERY):
        pass
    summary = profile.as_dict()
    assert summary["batch_sizes"] == [16, 13]
    assert summary["seconds"]["infer"] == pytest.approx(0.4)
    assert summary["ms_per_batch"]["infer"] == pytest.approx(200)
    assert summary["ms_per_batch"]["encode"] == pytest.approx(10)
    assert summary["seconds"]["query"] >= 0 and summary["seconds"]["store"] == 0
    assert set(summary["seconds"]) == {phase.value for phase in Phase}
    profile.clear()
    assert profile.as_dict()["batch_sizes"] == []
    assert set(profile.as_dict()["ms_per_batch"].values()) == {None}
