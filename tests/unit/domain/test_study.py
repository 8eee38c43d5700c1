"""Drawing a study's cells stratified by class, and each expert's own order."""

from __future__ import annotations

from collections import Counter

import pytest

from stainless.domain.study import draw_stratified, expert_order


def _references(**sizes: int) -> dict[str, str]:
    return {f"{code}-{i}": code for code, size in sizes.items() for i in range(size)}


def test_each_class_gets_an_equal_share_as_far_as_it_has_cells() -> None:
    references = _references(NE=50, LY=30, BL=4, ERB=2)
    drawn = draw_stratified(references, 20, seed=1)
    assert len(drawn) == len(set(drawn)) == 20
    counts = Counter(references[cell] for cell in drawn)
    # 5 each asked; BL and ERB give all they have, the 9 left are shared by NE and LY
    assert counts == {"BL": 4, "ERB": 2, "LY": 7, "NE": 7}


def test_the_draw_follows_the_seed_and_comes_shuffled() -> None:
    references = _references(NE=40, LY=40, MO=40)
    first = draw_stratified(references, 30, seed=3)
    assert first == draw_stratified(references, 30, seed=3)
    assert first != draw_stratified(references, 30, seed=4)
    codes = [references[cell] for cell in first]
    assert codes != sorted(codes)  # not grouped by class
    assert Counter(codes) == {"NE": 10, "LY": 10, "MO": 10}


def test_a_draw_of_every_cell_takes_them_all() -> None:
    references = _references(NE=3, LY=1)
    assert sorted(draw_stratified(references, 4, seed=0)) == sorted(references)


@pytest.mark.parametrize(("cells", "message"), [(0, "at least one"), (5, "only 4")])
def test_impossible_draws_are_refused(cells: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        draw_stratified(_references(NE=3, LY=1), cells, seed=0)


def test_each_expert_has_an_order_of_their_own_that_stays() -> None:
    ids = [f"item-{i}" for i in range(30)]
    rita = expert_order(ids, seed=7, expert="rita")
    assert rita == expert_order(ids, seed=7, expert="rita")
    assert sorted(rita) == sorted(ids)
    assert rita != expert_order(ids, seed=7, expert="erin")
    assert rita != expert_order(ids, seed=8, expert="rita")
