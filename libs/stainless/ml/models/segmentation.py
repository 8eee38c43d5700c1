"""A small U-Net for the four mask classes (thesis ch. 6.1, structure reconstruction).

Model 2 uses it pre-trained and *frozen* (``build_structure_critic``): the structure loss
of thesis eq. 6.3 back-propagates through it into the generator, but its own weights are
never updated. Output: logits ``(B, n_classes, S, S)`` for background, red cell, cytoplasm,
nucleus.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from stainless.ml.models.blocks import ConvNormAct, Norm, freeze, parameter_count, require_positive
from stainless.ml.models.configs import DisentangledConfig


class _DoubleConv(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            ConvNormAct(in_channels=in_channels, out_channels=out_channels, norm=Norm.BATCH),
            ConvNormAct(in_channels=out_channels, out_channels=out_channels, norm=Norm.BATCH),
        )


class UNet(nn.Module):
    """Encoder-decoder with skip connections; ``depth`` 2x2 max-poolings.

    Args:
        in_channels: image channels.
        n_classes: mask classes (4).
        base_channels: width of the first level; doubled per level.
        depth: poolings; image sides must be divisible by ``2**depth``.
    """

    def __init__(self, *, in_channels: int, n_classes: int, base_channels: int, depth: int) -> None:
        super().__init__()
        require_positive(
            in_channels=in_channels,
            n_classes=n_classes,
            base_channels=base_channels,
            depth=depth,
        )
        widths = [base_channels * 2**level for level in range(depth + 1)]
        self.depth = depth
        self.down = nn.ModuleList([_DoubleConv(in_channels, widths[0])])
        self.down.extend(_DoubleConv(widths[i], widths[i + 1]) for i in range(depth))
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2)
            for i in reversed(range(depth))
        )
        self.merge = nn.ModuleList(
            _DoubleConv(2 * widths[i], widths[i]) for i in reversed(range(depth))
        )
        self.head = nn.Conv2d(widths[0], n_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        step = 2**self.depth
        if x.shape[-1] % step or x.shape[-2] % step:
            raise ValueError(f"image sides must be divisible by {step}, got {tuple(x.shape)}")
        skips: list[Tensor] = []
        for index, block in enumerate(self.down):
            if index:
                x = nn.functional.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        skips.pop()
        for up, merge in zip(self.up, self.merge, strict=True):
            x = merge(torch.cat([skips.pop(), up(x)], dim=1))
        logits: Tensor = self.head(x)
        return logits

    def parameter_count(self) -> int:
        """Scalar parameters."""
        return parameter_count(self)


def build_segmenter(config: DisentangledConfig) -> UNet:
    """A trainable U-Net of ``config``'s size (pre-train it on the pseudo-masks)."""
    return UNet(
        in_channels=config.image_channels,
        n_classes=config.n_segmentation_classes,
        base_channels=config.segmenter_channels,
        depth=config.segmenter_depth,
    )


def build_structure_critic(
    config: DisentangledConfig, state: dict[str, Tensor] | None = None
) -> UNet:
    """The frozen U-Net of thesis eq. 6.3, loaded from ``state`` when given."""
    net = build_segmenter(config)
    if state is not None:
        net.load_state_dict(state)
    freeze(net)
    return net
