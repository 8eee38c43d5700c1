"""ManifestDataset gives what training's phantom CellDataset gives, for the same cells."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from stainless.core.db.models import utcnow
from stainless.core.storage.local import LocalObjectStore
from stainless.datasets.importers import import_phantom
from stainless.datasets.manifest import DatasetItem, DatasetManifest, read_manifest
from stainless.datasets.phantom import write_phantom_set
from stainless.datasets.torch_data import ManifestDataset
from stainless.imaging.codecs import encode_png
from stainless.imaging.phantom import PhantomConfig, generate_field
from stainless.imaging.phantom_set import field_rng, phantom_config
from stainless_training.phantom_data import CellDataset, field_samples


@pytest.fixture(scope="module")
def phantom_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("phantom")
    write_phantom_set(
        LocalObjectStore(root),
        slides=1,
        fields=2,
        seed=3,
        config=phantom_config(width=512, height=512),
    )
    return root


@pytest.mark.parametrize("image_size", [256, 64])
def test_items_match_cell_dataset(phantom_dir: Path, tmp_path: Path, image_size: int) -> None:
    store = LocalObjectStore(tmp_path / "store")
    report = import_phantom(phantom_dir, store, name="ph", crop_size=256)
    assert report.key is not None
    dataset = ManifestDataset(store, read_manifest(store, report.key), image_size=image_size)

    truth = json.loads((phantom_dir / "manifest.json").read_text())
    config = PhantomConfig.model_validate(truth["config"])
    samples = []
    for index in range(2):
        field = generate_field(config, field_rng(truth["seed"], 0, index))
        samples += field_samples(field, field_index=index, crop_size=256, image_size=image_size)
    reference = CellDataset(samples)

    assert len(dataset) == len(reference) > 0
    assert dataset.labels == reference.labels
    for ours, theirs in zip(dataset, reference, strict=True):
        assert set(theirs) <= set(ours)
        assert set(ours) - set(theirs) == {"has_pair", "has_mask"}
        for key, tensor in theirs.items():
            assert ours[key].dtype == tensor.dtype, key
            assert ours[key].shape == tensor.shape, key
            assert torch.equal(ours[key], tensor), key
        assert bool(ours["has_pair"]) and bool(ours["has_mask"])
        assert ours["dic"].min() >= -1 and ours["dic"].max() <= 1


def test_missing_pair_mask_and_label_are_zero_and_flagged(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    store.put("c/d.png", encode_png(np.full((40, 40), 15000, np.uint16)))
    manifest = DatasetManifest(
        name="x",
        created_at=utcnow(),
        items=(DatasetItem(id="a", dic="c/d.png", source="import:folder"),),
    )
    dataset = ManifestDataset(store, manifest, image_size=32)
    item = dataset[0]
    assert item["dic"].shape == (1, 32, 32) and item["dic"].dtype == torch.float32
    assert torch.allclose(item["dic"], torch.zeros(1, 32, 32))  # 15000 / 30000 -> 0.5 -> 0
    assert item["bf"].shape == (3, 32, 32) and not item["bf"].any()
    assert item["mask"].dtype == torch.int64 and not item["mask"].any()
    assert item["label"].dtype == torch.int64 and int(item["label"]) == -1
    assert item["has_pair"].dtype == torch.bool and not bool(item["has_pair"])
    assert not bool(item["has_mask"])
    assert dataset.labels == [-1] and dataset.has_pair == [False]
