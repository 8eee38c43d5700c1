from __future__ import annotations

import pytest

from stainless.domain.statistics import wilson_interval


def test_wilson_interval_brackets_the_proportion() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)
    low, high = wilson_interval(6, 6)
    assert low == pytest.approx(0.6097, abs=1e-4) and high == pytest.approx(1.0)
    low, high = wilson_interval(20, 22)
    assert low == pytest.approx(0.7218, abs=1e-4) and high == pytest.approx(0.9747, abs=1e-4)
    assert wilson_interval(0, 3)[0] == 0.0 and wilson_interval(0, 3)[1] < 0.6
    # a 100-cell differential: 50 of 100 is 40.4-59.6%; 0 of 100 cannot exclude 3.7%
    assert [round(100 * v, 1) for v in wilson_interval(50, 100)] == [40.4, 59.6]
    assert [round(100 * v, 1) for v in wilson_interval(0, 100)] == [0.0, 3.7]
    with pytest.raises(ValueError, match="0 <= successes <= trials"):
        wilson_interval(3, 2)
