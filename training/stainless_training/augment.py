"""Augmentations that keep the DIC shear direction (thesis ch. 8.2: random cropping and
resizing, never flips or rotations, which would reverse or turn the DIC relief)."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional

__all__ = ["paired_jitter"]


def paired_jitter(
    dic: Tensor, bf: Tensor, *, shift: float, scale: float, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """The same random crop of each DIC crop ``(B, 1, H, W)`` and its brightfield pair
    ``(B, 3, H, W)``: moved by up to ``shift`` of the side along each axis and resized by
    a factor in ``[1 - scale, 1 + scale]``. The axes keep their direction (no flip, no
    rotation, no shear); the border pixels fill what comes into view."""
    if not 0 <= shift <= 0.5 or not 0 <= scale < 1:
        raise ValueError(f"shift must lie in [0, 0.5] and scale in [0, 1), got {shift}, {scale}")
    if dic.shape[0] != bf.shape[0] or dic.shape[-2:] != bf.shape[-2:]:
        raise ValueError(f"unpaired crops: {tuple(dic.shape)} and {tuple(bf.shape)}")
    if not shift and not scale:
        return dic, bf
    batch = dic.shape[0]
    factor = 1 + (torch.rand(batch, generator=generator) * 2 - 1) * scale
    offset = (torch.rand(batch, 2, generator=generator) * 2 - 1) * (2 * shift)
    theta = torch.zeros(batch, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / factor  # > 0: each axis keeps its direction
    theta[:, :, 2] = offset  # normalised coordinates span 2 per side
    grid = functional.affine_grid(theta.to(dic), list(dic.shape), align_corners=False)

    def sample(images: Tensor) -> Tensor:
        return functional.grid_sample(images, grid, padding_mode="border", align_corners=False)

    return sample(dic), sample(bf)
