from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from stainless_training.sampling import class_balanced_batches, frequency_weights


def test_every_batch_holds_different_classes_and_rare_classes_are_oversampled() -> None:
    labels = [0] * 60 + [1] * 20 + [2] * 5 + [3] * 2 + [4] * 30 + [5] * 9
    batches = list(class_balanced_batches(labels, batch_size=6, seed=3))
    assert batches
    for batch in batches:
        assert len({labels[i] for i in batch}) == 6
    drawn = Counter(labels[i] for batch in batches for i in batch)
    assert max(drawn.values()) - min(drawn.values()) <= len(batches) // 2
    assert batches == list(class_balanced_batches(labels, batch_size=6, seed=3))


def test_batch_larger_than_the_classes_is_refused() -> None:
    with pytest.raises(ValueError, match="classes present"):
        next(class_balanced_batches([0, 0, 1], batch_size=3, seed=0))


def test_frequency_weights() -> None:
    weights = frequency_weights([0, 0, 0, 1], n_classes=3)
    np.testing.assert_allclose(weights, [0.5, 1.5, 0.0])
