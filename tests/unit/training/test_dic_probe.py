"""The DIC-only classifier: it learns what the DIC crop holds, seeded, and nothing else."""

from __future__ import annotations

import numpy as np
import pytest

from stainless.ml.models.classifier import CropClassifier
from stainless_training.dic_probe import ProbeSettings, probe_logits, train_dic_probe
from stainless_training.phantom_data import CellSample

SIZE = 16


def _cells(n: int, seed: int, *, told_apart: bool) -> list[CellSample]:
    """Two classes of noisy crops with a spot somewhere: bright in class 0, dark in class 1
    (or, not ``told_apart``, either: the label is not in the image)."""
    rng = np.random.default_rng(seed)
    cells = []
    for i in range(n):
        label = i % 2
        dic = (0.5 + 0.05 * rng.standard_normal((SIZE, SIZE))).astype(np.float32)
        dark = label if told_apart else int(rng.integers(2))
        y, x = rng.integers(2, SIZE - 6, size=2)
        dic[y : y + 4, x : x + 4] += -0.3 if dark else 0.3
        cells.append(
            CellSample(
                dic=dic.clip(0, 1),
                bf=np.zeros((SIZE, SIZE, 3), np.float32),
                mask=np.zeros((SIZE, SIZE), np.int64),
                label=label,
                field=i,
            )
        )
    return cells


def _accuracy(probe: CropClassifier, cells: list[CellSample]) -> float:
    predicted = probe_logits(probe, cells).argmax(axis=1)
    return float(np.mean(predicted == np.array([c.label for c in cells])))


def test_it_separates_classes_the_dic_tells_apart_and_not_those_it_does_not() -> None:
    settings = ProbeSettings(steps=150, batch_size=2, shift=0.0, scale=0.0)
    held_out = _cells(100, 1, told_apart=True)
    probe = train_dic_probe(_cells(40, 0, told_apart=True), n_classes=2, settings=settings)
    assert _accuracy(probe, held_out) > 0.95
    blind = train_dic_probe(_cells(40, 0, told_apart=False), n_classes=2, settings=settings)
    assert _accuracy(blind, _cells(200, 1, told_apart=False)) < 0.7


def test_training_is_seeded() -> None:
    cells = _cells(20, 0, told_apart=True)
    settings = ProbeSettings(steps=5, batch_size=2)
    first = probe_logits(train_dic_probe(cells, n_classes=2, settings=settings), cells)
    again = probe_logits(train_dic_probe(cells, n_classes=2, settings=settings), cells)
    np.testing.assert_array_equal(first, again)


def test_it_refuses_what_it_cannot_learn_from() -> None:
    with pytest.raises(ValueError, match="no cells"):
        train_dic_probe([], n_classes=2)
