"""Class-balanced batches and frequency weights for unbalanced white-cell classes (ch. 8.2).

Flips and rotations are deliberately absent from the augmentations of this
package: they would break the direction of the DIC shear, the gradient-like
relief the networks read (thesis ch. 8.2).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np


def class_balanced_batches(
    labels: Sequence[int], *, batch_size: int, seed: int, drop_last: bool = True
) -> Iterator[list[int]]:
    """Yield index batches in which every sample comes from a different class.

    One epoch: classes are visited round-robin in a shuffled order, each drawing its
    samples without replacement (reshuffled when a class runs out), until every
    sample of the largest class was drawn once.

    Args:
        labels: the class of each sample.
        batch_size: samples per batch; at most the number of classes present.
        seed: seed of the shuffling, so an epoch is repeatable.
        drop_last: drop a final batch smaller than ``batch_size``.
    """
    by_class: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        by_class.setdefault(int(label), []).append(index)
    if batch_size < 1 or batch_size > len(by_class):
        raise ValueError(
            f"batch_size must lie in 1..{len(by_class)} (the classes present), got {batch_size}"
        )
    rng = np.random.default_rng(seed)
    pools = {label: list(rng.permutation(members)) for label, members in by_class.items()}
    cursors = dict.fromkeys(pools, 0)
    rounds = max(len(members) for members in by_class.values())
    draws = rounds * len(by_class) // batch_size
    for _ in range(draws):
        classes = rng.choice(sorted(pools), size=batch_size, replace=False)
        batch = []
        for label in classes:
            label = int(label)
            if cursors[label] == len(pools[label]):
                pools[label] = list(rng.permutation(by_class[label]))
                cursors[label] = 0
            batch.append(int(pools[label][cursors[label]]))
            cursors[label] += 1
        if len(batch) == batch_size or not drop_last:
            yield batch


def frequency_weights(labels: Sequence[int], *, n_classes: int) -> np.ndarray:
    """Per-class loss weights inversely proportional to frequency, mean 1 over present classes.

    Absent classes get weight 0.
    """
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes).astype(float)
    if counts.size > n_classes:
        raise ValueError(f"labels exceed n_classes={n_classes}")
    weights = np.zeros(n_classes)
    present = counts > 0
    weights[present] = 1.0 / counts[present]
    scaled: np.ndarray = weights * present.sum() / weights[present].sum()
    return scaled
