"""A small classifier of one crop: halvings to 8 px, then the mean and the maximum of each
feature map into a linear layer.

Model 3's critic uses it as the AC-GAN head that reads the stained image alone
(``PairedConfig.class_head = "stained"``), and the evaluation's DIC-only classifier is one
on the DIC crop. Instance norm: a class-balanced batch (one cell per class) has statistics
no other batch shares, and batch norm's running estimates of them failed (0.71 against 0.94
held out on the clinical phantom's DIC crops at 128 px).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from stainless.ml.models.blocks import ConvNormAct, Downsample


class CropClassifier(nn.Module):
    """Class logits ``(B, n_classes)`` of crops ``(B, in_channels, S, S)``; ``S`` a power of
    two of at least 16, each halving doubles the width up to ``8 * width``."""

    def __init__(
        self, *, in_channels: int, n_classes: int, image_size: int, width: int = 16
    ) -> None:
        super().__init__()
        if image_size < 16 or image_size & (image_size - 1):
            raise ValueError(f"image_size must be a power of two of at least 16, got {image_size}")
        layers: list[nn.Module] = [ConvNormAct(in_channels=in_channels, out_channels=width)]
        channels, size = width, image_size
        while size > 8:
            wider = min(channels * 2, 8 * width)
            layers.append(Downsample(in_channels=channels, out_channels=wider))
            channels, size = wider, size // 2
        self.features = nn.Sequential(*layers)
        self.classify = nn.Linear(2 * channels, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        features = self.features(x)
        pooled = torch.cat([features.mean(dim=(2, 3)), features.amax(dim=(2, 3))], dim=1)
        logits: Tensor = self.classify(pooled)
        return logits
