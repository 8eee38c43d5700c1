from __future__ import annotations

import numpy as np
import pytest
import torch

from stainless.domain.cells import CellClass
from stainless.domain.vocabulary import CLINICAL, HEALTHY
from stainless.imaging.phantom import PhantomConfig
from stainless.imaging.phantom_set import phantom_config
from stainless_training.phantom_data import CLASSES, CellDataset, label_of, phantom_samples

CONFIG = PhantomConfig(width=768, height=576)


@pytest.fixture(scope="module")
def samples():  # type: ignore[no-untyped-def]
    return phantom_samples(fields=4, seed=2, crop_size=256, image_size=64, config=CONFIG)


def test_samples_are_aligned_pairs_with_masks_and_classes(samples) -> None:  # type: ignore[no-untyped-def]
    assert samples
    for sample in samples:
        assert sample.dic.shape == (64, 64) and sample.bf.shape == (64, 64, 3)
        assert sample.dic.min() >= 0 and sample.dic.max() <= 1
        assert set(np.unique(sample.mask)) <= {0, 1, 2, 3}
        assert 0 <= sample.label < len(CLASSES)
        nucleus = sample.mask == 3
        stained = {CLASSES.index(CellClass.SNE), CLASSES.index(CellClass.LY)}
        if sample.label in stained and nucleus.sum() > 20:  # aligned: the nucleus is dark in BF
            assert sample.bf[nucleus].mean() < sample.bf[sample.mask == 0].mean() - 0.2


def test_same_seed_same_samples() -> None:
    a = phantom_samples(fields=1, seed=5, image_size=64, config=CONFIG)
    b = phantom_samples(fields=1, seed=5, image_size=64, config=CONFIG)
    assert len(a) == len(b)
    assert all(
        np.array_equal(x.dic, y.dic) and x.label == y.label for x, y in zip(a, b, strict=True)
    )


def test_dataset_tensors(samples) -> None:  # type: ignore[no-untyped-def]
    item = CellDataset(samples)[0]
    assert item["dic"].shape == (1, 64, 64) and item["bf"].shape == (3, 64, 64)
    assert item["dic"].min() >= -1 and item["bf"].max() <= 1
    assert item["mask"].dtype == torch.int64 and item["label"].ndim == 0


def test_one_class_config_gives_only_that_class() -> None:
    config = PhantomConfig(width=512, height=512, class_frequencies={CellClass.EO: 1.0})
    labels = {s.label for s in phantom_samples(fields=2, seed=0, image_size=32, config=config)}
    assert labels <= {CLASSES.index(CellClass.EO)}


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="at least one field"):
        phantom_samples(fields=0, seed=0)
    with pytest.raises(ValueError, match="at least one sample"):
        CellDataset([])


def test_clinical_cells_are_labelled_in_the_clinical_vocabulary() -> None:
    config = phantom_config(width=768, height=576, slide="clinical-balanced")
    samples = phantom_samples(
        fields=6, seed=1, crop_size=360, image_size=48, config=config, vocabulary=CLINICAL
    )
    assert samples and all(0 <= s.label < len(CLINICAL.classes) for s in samples)
    assert len({s.label for s in samples}) >= 4 and samples[0].dic.shape == (48, 48)
    assert label_of("SNE", CLINICAL) == CLINICAL.classes.index("NE")  # folded
    with pytest.raises(ValueError, match="the run's classes are ART"):
        label_of("BL", HEALTHY)
