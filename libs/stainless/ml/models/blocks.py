"""Small composable building blocks shared by the Stainless networks.

Every block keeps the spatial size except the explicit ``Downsample`` (stride 2) and
``Upsample`` (nearest x2 then a 3x3 convolution, which avoids the checkerboard pattern of
transposed convolutions). Normalisations:

* instance norm for generators and encoders (thesis ch. 5.3.1, StarGAN-style);
* no normalisation in the WGAN-GP critics: the gradient penalty is taken per sample, so
  batch statistics must not mix samples (thesis ch. 5.3.1);
* AdaIN injects a style vector and SPADE a spatial structure code (thesis ch. 6.1).
"""

from __future__ import annotations

from enum import StrEnum

import torch
from torch import Tensor, nn
from torch.nn import functional


class Norm(StrEnum):
    """Normalisation after a convolution; ``Norm("x")`` raises ``ValueError``."""

    INSTANCE = "instance"
    BATCH = "batch"
    NONE = "none"


class Activation(StrEnum):
    """Non-linearity after the normalisation; ``Activation("x")`` raises ``ValueError``."""

    RELU = "relu"
    LEAKY_RELU = "leaky_relu"
    TANH = "tanh"
    NONE = "none"


def require_positive(**values: int | float) -> None:
    """Raise ``ValueError`` naming the first argument that is not > 0."""
    for name, value in values.items():
        if isinstance(value, bool) or not value > 0:
            raise ValueError(f"{name} must be positive, got {value!r}")


def require_non_negative(**values: int) -> None:
    """Raise ``ValueError`` naming the first argument that is < 0."""
    for name, value in values.items():
        if isinstance(value, bool) or value < 0:
            raise ValueError(f"{name} must be non-negative, got {value!r}")


def make_norm(norm: Norm | str, channels: int) -> nn.Module:
    """A normalisation layer over ``channels`` feature maps (affine where it has one)."""
    kind = Norm(norm)
    if kind is Norm.INSTANCE:
        return nn.InstanceNorm2d(channels, affine=True)
    if kind is Norm.BATCH:
        return nn.BatchNorm2d(channels)
    return nn.Identity()


def make_activation(activation: Activation | str) -> nn.Module:
    """The activation layer; leaky ReLU uses slope 0.2 (critics, thesis ch. 5.3.1)."""
    kind = Activation(activation)
    if kind is Activation.RELU:
        return nn.ReLU(inplace=False)
    if kind is Activation.LEAKY_RELU:
        return nn.LeakyReLU(0.2, inplace=False)
    if kind is Activation.TANH:
        return nn.Tanh()
    return nn.Identity()


class ConvNormAct(nn.Sequential):
    """Convolution, normalisation, activation; 'same' padding for odd kernels at stride 1.

    Args:
        in_channels: input feature maps.
        out_channels: output feature maps.
        kernel_size: square kernel side.
        stride: convolution stride.
        padding: zero padding; ``None`` means ``kernel_size // 2``.
        norm: normalisation (``Norm``); a convolution followed by a norm has no bias.
        activation: non-linearity (``Activation``).
    """

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int | None = None,
        norm: Norm | str = Norm.INSTANCE,
        activation: Activation | str = Activation.RELU,
    ) -> None:
        require_positive(
            in_channels=in_channels,
            out_channels=out_channels,
            kernel_size=kernel_size,
            stride=stride,
        )
        norm_kind = Norm(norm)
        pad = kernel_size // 2 if padding is None else padding
        require_non_negative(padding=pad)
        super().__init__(
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride=stride,
                padding=pad,
                bias=norm_kind is Norm.NONE,
            ),
            make_norm(norm_kind, out_channels),
            make_activation(activation),
        )


class ResBlock(nn.Module):
    """Residual block ``x + conv(act(norm(conv(x))))`` at constant width (thesis ch. 5.2.1).

    Args:
        channels: feature maps in and out.
        norm: normalisation inside the block.
    """

    def __init__(self, *, channels: int, norm: Norm | str = Norm.INSTANCE) -> None:
        super().__init__()
        self.body = nn.Sequential(
            ConvNormAct(in_channels=channels, out_channels=channels, norm=norm),
            ConvNormAct(
                in_channels=channels,
                out_channels=channels,
                norm=norm,
                activation=Activation.NONE,
            ),
        )

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = x + self.body(x)
        return out


class Downsample(ConvNormAct):
    """Halve the spatial size with a stride-2 4x4 convolution (even sizes stay exact)."""

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int,
        norm: Norm | str = Norm.INSTANCE,
        activation: Activation | str = Activation.RELU,
    ) -> None:
        super().__init__(
            in_channels=in_channels,
            out_channels=out_channels,
            kernel_size=4,
            stride=2,
            padding=1,
            norm=norm,
            activation=activation,
        )


class Upsample(nn.Sequential):
    """Double the spatial size: nearest-neighbour x2 then a 3x3 conv-norm-act."""

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int,
        norm: Norm | str = Norm.INSTANCE,
        activation: Activation | str = Activation.RELU,
    ) -> None:
        super().__init__(
            nn.Upsample(scale_factor=2.0, mode="nearest"),
            ConvNormAct(
                in_channels=in_channels,
                out_channels=out_channels,
                norm=norm,
                activation=activation,
            ),
        )


def broadcast_concat(features: Tensor, code: Tensor) -> Tensor:
    """Concatenate a per-sample vector to every position of a feature map (thesis eq. 5.1).

    Args:
        features: ``(B, C, H, W)``.
        code: ``(B, K)``, e.g. a target-domain one-hot.

    Returns:
        ``(B, C + K, H, W)``.
    """
    if features.dim() != 4 or code.dim() != 2 or code.shape[0] != features.shape[0]:
        raise ValueError(
            f"need features (B, C, H, W) and code (B, K), got {tuple(features.shape)} "
            f"and {tuple(code.shape)}"
        )
    height, width = features.shape[-2:]
    tiled = code.to(features.dtype)[:, :, None, None].expand(-1, -1, height, width)
    return torch.cat([features, tiled], dim=1)


def domain_onehot(domain: int | Tensor, *, n_domains: int, batch: int, like: Tensor) -> Tensor:
    """One-hot ``(batch, n_domains)`` on ``like``'s device and dtype.

    Args:
        domain: one index for the whole batch, ``(B,)`` indices, or an already one-hot /
            soft ``(B, n_domains)`` code (returned as is, cast).
        n_domains: number of domains.
        batch: batch size ``B``.
        like: tensor whose device and dtype the result takes.
    """
    if isinstance(domain, Tensor) and domain.dim() == 2:
        if tuple(domain.shape) != (batch, n_domains):
            raise ValueError(f"one-hot must be ({batch}, {n_domains}), got {tuple(domain.shape)}")
        return domain.to(device=like.device, dtype=like.dtype)
    index = domain_index(domain, n_domains=n_domains, batch=batch, device=like.device)
    return functional.one_hot(index, n_domains).to(like.dtype)


def domain_index(
    domain: int | Tensor, *, n_domains: int, batch: int, device: torch.device
) -> Tensor:
    """Domain indices ``(batch,)`` (long) from one index or ``(B,)`` indices."""
    if isinstance(domain, int):
        if not 0 <= domain < n_domains:
            raise ValueError(f"domain index must lie in [0, {n_domains}), got {domain}")
        return torch.full((batch,), domain, dtype=torch.long, device=device)
    index = domain.to(device=device, dtype=torch.long).reshape(-1)
    if index.numel() != batch:
        raise ValueError(f"need {batch} domain indices, got {index.numel()}")
    if bool(((index < 0) | (index >= n_domains)).any()):
        raise ValueError(f"domain indices must lie in [0, {n_domains})")
    return index


def instance_stats(x: Tensor, eps: float = 1e-5) -> tuple[Tensor, Tensor]:
    """Per-sample, per-channel mean and standard deviation ``(B, C, 1, 1)`` of ``x``."""
    mean = x.mean(dim=(2, 3), keepdim=True)
    std = (x.var(dim=(2, 3), keepdim=True, unbiased=False) + eps).sqrt()
    return mean, std


class AdaIN(nn.Module):
    """Adaptive instance norm: ``(1 + gamma(s)) * IN(x) + beta(s)`` (thesis ch. 6.1).

    Args:
        channels: feature maps of ``x``.
        style_dim: length of the style code ``s``.
    """

    def __init__(self, *, channels: int, style_dim: int) -> None:
        super().__init__()
        require_positive(channels=channels, style_dim=style_dim)
        self.norm = nn.InstanceNorm2d(channels, affine=False)
        self.affine = nn.Linear(style_dim, 2 * channels)

    def forward(self, x: Tensor, style: Tensor) -> Tensor:
        gamma, beta = self.affine(style)[:, :, None, None].chunk(2, dim=1)
        out: Tensor = (1 + gamma) * self.norm(x) + beta
        return out


class SPADE(nn.Module):
    """Spatially adaptive norm: ``(1 + gamma(t)) * IN(x) + beta(t)`` (thesis ch. 6.1).

    The structure code ``t`` plays the role of SPADE's segmentation map; it is resized
    (bilinear) to the feature map, so one code drives every resolution of the generator.

    Args:
        channels: feature maps of ``x``.
        structure_channels: channels of ``t``.
        hidden_channels: width of the shared convolution on ``t``.
    """

    def __init__(self, *, channels: int, structure_channels: int, hidden_channels: int) -> None:
        super().__init__()
        require_positive(
            channels=channels,
            structure_channels=structure_channels,
            hidden_channels=hidden_channels,
        )
        self.norm = nn.InstanceNorm2d(channels, affine=False)
        self.shared = nn.Sequential(
            nn.Conv2d(structure_channels, hidden_channels, 3, padding=1), nn.ReLU()
        )
        self.gamma = nn.Conv2d(hidden_channels, channels, 3, padding=1)
        self.beta = nn.Conv2d(hidden_channels, channels, 3, padding=1)

    def forward(self, x: Tensor, structure: Tensor) -> Tensor:
        if structure.shape[-2:] != x.shape[-2:]:
            structure = functional.interpolate(
                structure, size=x.shape[-2:], mode="bilinear", align_corners=False
            )
        hidden = self.shared(structure)
        out: Tensor = (1 + self.gamma(hidden)) * self.norm(x) + self.beta(hidden)
        return out


def freeze(module: nn.Module) -> nn.Module:
    """Stop training ``module`` (no grads on its weights, eval mode); returns it.

    Gradients still flow *through* a frozen module to its input, as the structure critic of
    thesis eq. 6.3 needs.
    """
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module.eval()


def parameter_count(module: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of scalar parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
