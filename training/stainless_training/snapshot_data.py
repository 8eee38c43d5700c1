"""Training and held-out cells of a dataset snapshot (``stainless.datasets``).

A cell is held out for evaluation when the SHA-256 of its id falls in the first
``fraction`` of the hash space: a function of the cell alone, so the split is the same
in every run, on every worker, and when the snapshot grows.
"""

from __future__ import annotations

import hashlib

from torch import Tensor

from stainless.core.config import StoreSettings
from stainless.core.storage import create_store
from stainless.datasets.manifest import read_manifest
from stainless.datasets.torch_data import ManifestDataset

HELD_OUT_FRACTION = 0.1


def is_held_out(item_id: str, fraction: float = HELD_OUT_FRACTION) -> bool:
    return int(hashlib.sha256(item_id.encode()).hexdigest()[:8], 16) < fraction * 16**8


class SnapshotSamples:
    """The training (or held-out) cells of a snapshot, as ``CellDataset`` gives items."""

    def __init__(self, dataset: ManifestDataset, *, held_out: bool, fraction: float) -> None:
        items = dataset.manifest.items
        self._dataset = dataset
        self._indices = [
            i for i, item in enumerate(items) if is_held_out(item.id, fraction) == held_out
        ]
        labels, pairs = dataset.labels, dataset.has_pair
        self._labels = [labels[i] for i in self._indices]
        self._pairs = [pairs[i] for i in self._indices]

    @property
    def labels(self) -> list[int]:
        return self._labels

    @property
    def has_pair(self) -> list[bool]:
        return self._pairs

    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return self._dataset[self._indices[index]]


def snapshot_samples(
    store: StoreSettings,
    key: str,
    image_size: int,
    *,
    held_out: bool = False,
    fraction: float = HELD_OUT_FRACTION,
) -> SnapshotSamples:
    """The cells of snapshot ``key`` (its hash checked) for a model of side ``image_size``."""
    objects = create_store(store)
    dataset = ManifestDataset(objects, read_manifest(objects, key), image_size=image_size)
    return SnapshotSamples(dataset, held_out=held_out, fraction=fraction)
