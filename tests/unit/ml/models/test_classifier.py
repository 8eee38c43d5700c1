"""The crop classifier: logits of every crop size it accepts, refusals of the others."""

from __future__ import annotations

import pytest
import torch

from stainless.ml.models.classifier import CropClassifier


@pytest.mark.parametrize(("channels", "size"), [(1, 16), (3, 64)])
def test_it_gives_one_row_of_logits_per_crop(channels: int, size: int) -> None:
    classifier = CropClassifier(in_channels=channels, n_classes=5, image_size=size)
    assert classifier(torch.zeros(2, channels, size, size)).shape == (2, 5)


@pytest.mark.parametrize("size", [8, 24])
def test_it_refuses_a_size_it_cannot_halve_to_8_px(size: int) -> None:
    with pytest.raises(ValueError, match="power of two"):
        CropClassifier(in_channels=1, n_classes=2, image_size=size)
