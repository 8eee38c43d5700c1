"""A torch ``Dataset`` over a snapshot: the items training's phantom ``CellDataset`` gives.

Each item is a dict of tensors, as ``stainless_training.phantom_data.CellDataset`` gives:

- ``dic``: float32 ``[1, S, S]`` in [-1, 1] (``2 · dic_unit(crop, S) − 1``);
- ``bf``: float32 ``[3, S, S]`` in [-1, 1] (RGB / 255, area-resized to ``S``);
- ``mask``: int64 ``[S, S]``, 0 background, 1 red cell, 2 cytoplasm, 3 nucleus
  (nearest-resized to ``S``);
- ``label``: int64 scalar, the class index in ``manifest.classes``, -1 when unknown;

plus ``has_pair`` and ``has_mask`` (bool scalars): an item without a brightfield
crop or a mask gets zeros there and the flag False, so losses can mask them out.
Crops are read from the store when an item is asked for.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from stainless.core.storage import ObjectStore
from stainless.datasets.images import read_crop
from stainless.datasets.manifest import DatasetError, DatasetManifest
from stainless.imaging.inputs import dic_unit

__all__ = ["ManifestDataset"]


class ManifestDataset(Dataset[dict[str, torch.Tensor]]):
    """The cells of a snapshot as network inputs (see the module docstring)."""

    def __init__(self, store: ObjectStore, manifest: DatasetManifest, *, image_size: int) -> None:
        """Args:
        store: the object store the manifest's keys live in.
        manifest: the snapshot (from :func:`~stainless.datasets.manifest.read_manifest`).
        image_size: side ``S`` of the network's input; crops are resized to it.

        Raises:
            DatasetError: an empty manifest or a non-positive ``image_size``.
        """
        if not manifest.items:
            raise DatasetError("a dataset needs at least one item")
        if image_size < 1:
            raise DatasetError(f"image_size must be positive, got {image_size}")
        self._store = store
        self._manifest = manifest
        self._items = manifest.items
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self._items)

    @property
    def manifest(self) -> DatasetManifest:
        return self._manifest

    @property
    def labels(self) -> list[int]:
        """Class index of every item in order; -1 where the label is unknown."""
        return [self._manifest.label_index(item) for item in self._items]

    @property
    def has_pair(self) -> list[bool]:
        return [item.bf is not None for item in self._items]

    @property
    def has_mask(self) -> list[bool]:
        return [item.mask is not None for item in self._items]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = self._items[index]
        size = self.image_size
        dic = dic_unit(read_crop(self._store, item.dic, "dic"), size)
        if item.bf is not None:
            bf_pixels = read_crop(self._store, item.bf, "bf")
            if bf_pixels.shape[:2] != (size, size):
                bf_pixels = cv2.resize(bf_pixels, (size, size), interpolation=cv2.INTER_AREA)
            bf = bf_pixels.astype(np.float32) / 255.0
        else:
            bf = np.full((size, size, 3), 0.5, np.float32)  # 0 after the [-1, 1] mapping
        if item.mask is not None:
            mask_pixels = read_crop(self._store, item.mask, "mask")
            if mask_pixels.shape != (size, size):
                mask_pixels = cv2.resize(mask_pixels, (size, size), interpolation=cv2.INTER_NEAREST)
            mask = mask_pixels.astype(np.int64)
        else:
            mask = np.zeros((size, size), np.int64)
        return {
            "dic": torch.from_numpy(dic[None] * 2 - 1),
            "bf": torch.from_numpy(np.ascontiguousarray(bf.transpose(2, 0, 1)) * 2 - 1),
            "mask": torch.from_numpy(mask),
            "label": torch.tensor(self._manifest.label_index(item)),
            "has_pair": torch.tensor(item.bf is not None),
            "has_mask": torch.tensor(item.mask is not None),
        }
