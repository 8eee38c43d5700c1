"""Model 2: the style/structure disentangled translator (thesis ch. 6.1, Fig. 6.1).

Three codes describe an image:

* style ``s`` ``(B, style_dim)``: from noise by ``StyleMapping`` (one head per domain,
  ``s~ = M_S_y(z_s)``) or from an image by ``StyleEncoder`` (one head per domain);
* structure ``t`` ``(B, structure_channels, S / 2**structure_down, ...)``, the white
  cell's shape: from noise by ``StructureMapping`` (``t~ = M_T(z_t)``) or from an image by
  ``StructureEncoder``;
* background ``b``, the bottleneck features of ``BackgroundEncoder``.

The ``Generator`` decodes ``b``, injecting the style by AdaIN and the structure by SPADE
(``t`` standing where SPADE has a segmentation map) in every block. The critic has one
real/fake output per domain (``D_y``, eq. 6.1). ``encode`` / ``decode`` split the
translator so that confidence (thesis ch. 6.2) can corrupt ``t`` and ``s`` separately and
decode the corrupted copies as one batch.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn

from stainless.ml.models.blocks import (
    SPADE,
    Activation,
    AdaIN,
    ConvNormAct,
    Downsample,
    Norm,
    ResBlock,
    domain_index,
    parameter_count,
    require_non_negative,
    require_positive,
)
from stainless.ml.models.configs import DisentangledConfig

UNSTAINED, STAINED = 0, 1
"""Domain indices of thesis ch. 6.1 (``Y = {1, 2}``, counted from 0 here)."""


def _widths(base_channels: int, max_channels: int, n_down: int) -> list[int]:
    """Channels after the stem and after each downsampling (capped at ``max_channels``)."""
    return [min(base_channels * 2**level, max_channels) for level in range(n_down + 1)]


def _select(per_domain: Tensor, domain: int | Tensor) -> Tensor:
    """Pick ``per_domain[b, domain[b]]`` from ``(B, K, ...)``."""
    batch, n_domains = per_domain.shape[:2]
    index = domain_index(domain, n_domains=n_domains, batch=batch, device=per_domain.device)
    return per_domain[torch.arange(batch, device=per_domain.device), index]


class DisentangledCode(NamedTuple):
    """The three codes ``decode`` needs (thesis ch. 6.1)."""

    structure: Tensor  # t, (B, structure_channels, h, w)
    style: Tensor  # s, (B, style_dim)
    background: Tensor  # b, (B, C, H / 2**n_down, W / 2**n_down)

    def repeat(self, k: int) -> DisentangledCode:
        """Each sample ``k`` times in a row (``repeat_interleave``), for batched decoding."""
        require_positive(k=k)
        return DisentangledCode(*(code.repeat_interleave(k, dim=0) for code in self))


class StyleMapping(nn.Module):
    """Noise ``z_s`` to a style code, one output head per domain (thesis ch. 6.1, ``M_S``).

    Args:
        noise_dim: length of ``z_s``.
        style_dim: length of ``s``.
        hidden: width of the MLP.
        n_domains: heads.
        n_shared: shared hidden layers before the heads.
    """

    def __init__(
        self, *, noise_dim: int, style_dim: int, hidden: int, n_domains: int, n_shared: int = 3
    ) -> None:
        super().__init__()
        require_positive(
            noise_dim=noise_dim,
            style_dim=style_dim,
            hidden=hidden,
            n_domains=n_domains,
            n_shared=n_shared,
        )
        layers: list[nn.Module] = []
        previous = noise_dim
        for _ in range(n_shared):
            layers += [nn.Linear(previous, hidden), nn.ReLU()]
            previous = hidden
        self.shared = nn.Sequential(*layers)
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, style_dim))
            for _ in range(n_domains)
        )
        self.noise_dim = noise_dim

    def all_domains(self, z: Tensor) -> Tensor:
        """Style codes of every head ``(B, n_domains, style_dim)``."""
        if z.dim() != 2 or z.shape[1] != self.noise_dim:
            raise ValueError(f"z must be (B, {self.noise_dim}), got {tuple(z.shape)}")
        shared = self.shared(z)
        return torch.stack([head(shared) for head in self.heads], dim=1)

    def forward(self, z: Tensor, domain: int | Tensor) -> Tensor:
        """``s~ = M_S_y(z)`` ``(B, style_dim)``; ``domain`` is one index or ``(B,)``."""
        return _select(self.all_domains(z), domain)


class StyleEncoder(nn.Module):
    """Image to a style code, one head per domain (thesis ch. 6.1, ``En_S``).

    Args:
        in_channels: image channels.
        base_channels: stem width; doubled per downsampling up to ``max_channels``.
        max_channels: width cap.
        n_down: stride-2 layers before global pooling.
        style_dim: length of ``s``.
        n_domains: heads.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        base_channels: int,
        max_channels: int,
        n_down: int,
        style_dim: int,
        n_domains: int,
    ) -> None:
        super().__init__()
        require_positive(
            in_channels=in_channels,
            max_channels=max_channels,
            n_down=n_down,
            style_dim=style_dim,
            n_domains=n_domains,
        )
        self.trunk = _critic_trunk(in_channels, base_channels, max_channels, n_down)
        width = _widths(base_channels, max_channels, n_down)[-1]
        self.heads = nn.ModuleList(nn.Linear(width, style_dim) for _ in range(n_domains))

    def all_domains(self, x: Tensor) -> Tensor:
        """Style codes of every head ``(B, n_domains, style_dim)``."""
        pooled = self.trunk(x)
        return torch.stack([head(pooled) for head in self.heads], dim=1)

    def forward(self, x: Tensor, domain: int | Tensor) -> Tensor:
        """``s = En_S_y(x)`` ``(B, style_dim)``."""
        return _select(self.all_domains(x), domain)


def _critic_trunk(
    in_channels: int, base_channels: int, max_channels: int, n_down: int
) -> nn.Sequential:
    """Stem, ``n_down`` stride-2 leaky-ReLU layers (no norm), global average pooling."""
    require_positive(base_channels=base_channels)
    widths = _widths(base_channels, max_channels, n_down)
    layers: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 3, padding=1)]
    for level in range(n_down):
        layers.append(
            Downsample(
                in_channels=widths[level],
                out_channels=widths[level + 1],
                norm=Norm.NONE,
                activation=Activation.LEAKY_RELU,
            )
        )
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers)


class StructureMapping(nn.Module):
    """Noise ``z_t`` to a spatial structure code (thesis ch. 6.1, ``t~ = M_T(z_t)``).

    A linear layer makes a small map that nearest-upsampling blocks grow to
    ``structure_size``.

    Args:
        noise_dim: length of ``z_t``.
        structure_channels: channels of ``t``.
        structure_size: side of ``t``.
        hidden: width of the growing feature maps.
    """

    def __init__(
        self, *, noise_dim: int, structure_channels: int, structure_size: int, hidden: int
    ) -> None:
        super().__init__()
        require_positive(
            noise_dim=noise_dim,
            structure_channels=structure_channels,
            structure_size=structure_size,
            hidden=hidden,
        )
        start, n_up = structure_size, 0
        while start % 2 == 0 and start > 4:
            start, n_up = start // 2, n_up + 1
        self.start, self.hidden, self.noise_dim = start, hidden, noise_dim
        self.project = nn.Linear(noise_dim, hidden * start * start)
        layers: list[nn.Module] = []
        for _ in range(n_up):
            layers += [
                nn.Upsample(scale_factor=2.0, mode="nearest"),
                ConvNormAct(
                    in_channels=hidden, out_channels=hidden, activation=Activation.LEAKY_RELU
                ),
            ]
        layers.append(nn.Conv2d(hidden, structure_channels, 3, padding=1))
        self.grow = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        if z.dim() != 2 or z.shape[1] != self.noise_dim:
            raise ValueError(f"z must be (B, {self.noise_dim}), got {tuple(z.shape)}")
        seed = self.project(z).view(-1, self.hidden, self.start, self.start)
        structure: Tensor = self.grow(nn.functional.leaky_relu(seed, 0.2))
        return structure


class StructureEncoder(nn.Module):
    """Image to its spatial structure code (thesis ch. 6.1, ``t = En_T(x)``).

    Args:
        in_channels: image channels.
        base_channels: stem width; doubled per downsampling.
        n_down: downsamplings; ``t`` is ``S / 2**n_down`` on a side.
        structure_channels: channels of ``t``.
    """

    def __init__(
        self, *, in_channels: int, base_channels: int, n_down: int, structure_channels: int
    ) -> None:
        super().__init__()
        require_positive(
            in_channels=in_channels,
            base_channels=base_channels,
            structure_channels=structure_channels,
        )
        require_non_negative(n_down=n_down)
        layers: list[nn.Module] = [
            ConvNormAct(in_channels=in_channels, out_channels=base_channels, kernel_size=7)
        ]
        width = base_channels
        for _ in range(n_down):
            layers.append(Downsample(in_channels=width, out_channels=2 * width))
            width *= 2
        layers += [ResBlock(channels=width), nn.Conv2d(width, structure_channels, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        structure: Tensor = self.net(x)
        return structure


class BackgroundEncoder(nn.Module):
    """Image to the bottleneck features the generator decodes (thesis ch. 6.1, ``En_B``).

    Args:
        in_channels: image channels.
        base_channels: stem width; doubled per downsampling up to ``max_channels``.
        max_channels: width cap.
        n_down: downsamplings.
    """

    def __init__(
        self, *, in_channels: int, base_channels: int, max_channels: int, n_down: int
    ) -> None:
        super().__init__()
        require_positive(
            in_channels=in_channels,
            base_channels=base_channels,
            max_channels=max_channels,
            n_down=n_down,
        )
        widths = _widths(base_channels, max_channels, n_down)
        layers: list[nn.Module] = [
            ConvNormAct(in_channels=in_channels, out_channels=widths[0], kernel_size=7)
        ]
        for level in range(n_down):
            layers.append(Downsample(in_channels=widths[level], out_channels=widths[level + 1]))
        layers.append(ResBlock(channels=widths[-1]))
        self.net = nn.Sequential(*layers)
        self.out_channels = widths[-1]

    def forward(self, x: Tensor) -> Tensor:
        background: Tensor = self.net(x)
        return background


class StyleStructureBlock(nn.Module):
    """Residual block: SPADE(t) - act - conv - AdaIN(s) - act - conv, optional x2 upsampling.

    Args:
        in_channels: input feature maps.
        out_channels: output feature maps.
        style_dim: length of ``s``.
        structure_channels: channels of ``t``.
        spade_hidden: width of SPADE's shared convolution.
        upsample: double the spatial size.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int,
        style_dim: int,
        structure_channels: int,
        spade_hidden: int,
        upsample: bool,
    ) -> None:
        super().__init__()
        require_positive(in_channels=in_channels, out_channels=out_channels)
        self.spade = SPADE(
            channels=in_channels,
            structure_channels=structure_channels,
            hidden_channels=spade_hidden,
        )
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.adain = AdaIN(channels=out_channels, style_dim=style_dim)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.resize: nn.Module = (
            nn.Upsample(scale_factor=2.0, mode="nearest") if upsample else nn.Identity()
        )
        self.shortcut: nn.Module = (
            nn.Identity()
            if in_channels == out_channels
            else nn.Conv2d(in_channels, out_channels, 1, bias=False)
        )

    def forward(self, x: Tensor, style: Tensor, structure: Tensor) -> Tensor:
        act = nn.functional.leaky_relu
        h = self.conv1(self.resize(act(self.spade(x, structure), 0.2)))
        h = self.conv2(act(self.adain(h, style), 0.2))
        out: Tensor = (h + self.shortcut(self.resize(x))) / math.sqrt(2.0)
        return out


class Generator(nn.Module):
    """Decode background features under a style and a structure (thesis ch. 6.1, ``G``).

    Args:
        out_channels: image channels.
        base_channels: width at full resolution (the background encoder's stem width).
        max_channels: width cap (as in the background encoder).
        n_up: upsamplings (the background encoder's ``n_down``).
        n_res: style/structure blocks at the bottleneck.
        style_dim: length of ``s``.
        structure_channels: channels of ``t``.
        spade_hidden: width of SPADE's shared convolution.
    """

    def __init__(
        self,
        *,
        out_channels: int,
        base_channels: int,
        max_channels: int,
        n_up: int,
        n_res: int,
        style_dim: int,
        structure_channels: int,
        spade_hidden: int,
    ) -> None:
        super().__init__()
        require_positive(out_channels=out_channels, base_channels=base_channels, n_up=n_up)
        require_non_negative(n_res=n_res)
        widths = _widths(base_channels, max_channels, n_up)

        def block(cin: int, cout: int, upsample: bool) -> StyleStructureBlock:
            return StyleStructureBlock(
                in_channels=cin,
                out_channels=cout,
                style_dim=style_dim,
                structure_channels=structure_channels,
                spade_hidden=spade_hidden,
                upsample=upsample,
            )

        blocks = [block(widths[-1], widths[-1], False) for _ in range(n_res)]
        blocks += [block(widths[i + 1], widths[i], True) for i in reversed(range(n_up))]
        self.blocks = nn.ModuleList(blocks)
        self.to_image = nn.Sequential(
            nn.InstanceNorm2d(widths[0], affine=True),
            nn.LeakyReLU(0.2),
            nn.Conv2d(widths[0], out_channels, 1),
            nn.Tanh(),
        )
        self.style_dim = style_dim

    def forward(self, background: Tensor, style: Tensor, structure: Tensor) -> Tensor:
        if style.dim() != 2 or style.shape[1] != self.style_dim:
            raise ValueError(f"style must be (B, {self.style_dim}), got {tuple(style.shape)}")
        x = background
        for layer in self.blocks:
            x = layer(x, style, structure)
        image: Tensor = self.to_image(x)
        return image


class MultiHeadDiscriminator(nn.Module):
    """Critic with one real/fake logit per domain (thesis eq. 6.1, ``D_y``).

    Args:
        in_channels: image channels.
        base_channels: stem width; doubled per downsampling up to ``max_channels``.
        max_channels: width cap.
        n_down: stride-2 layers.
        n_domains: heads.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        base_channels: int,
        max_channels: int,
        n_down: int,
        n_domains: int,
    ) -> None:
        super().__init__()
        require_positive(
            in_channels=in_channels, max_channels=max_channels, n_down=n_down, n_domains=n_domains
        )
        self.trunk = _critic_trunk(in_channels, base_channels, max_channels, n_down)
        self.heads = nn.Linear(_widths(base_channels, max_channels, n_down)[-1], n_domains)

    def all_domains(self, x: Tensor) -> Tensor:
        """Logits of every head ``(B, n_domains)``."""
        logits: Tensor = self.heads(nn.functional.leaky_relu(self.trunk(x), 0.2))
        return logits

    def forward(self, x: Tensor, domain: int | Tensor) -> Tensor:
        """Logit ``(B,)`` of the head of each sample's ``domain``."""
        return _select(self.all_domains(x), domain)


class DisentangledTranslator(nn.Module):
    """Mapping networks, encoders and generator of thesis Fig. 6.1 (the critic is separate).

    Args:
        image_channels: channels of images in every domain (the generator maps both ways).
        n_domains: domains (2: unstained, stained).
        base_channels: stem width of the encoders and the generator.
        max_channels: width cap.
        n_down: downsamplings of the background encoder (= generator upsamplings).
        n_res: bottleneck blocks of the generator.
        style_dim: length of ``s``.
        style_noise_dim: length of ``z_s``.
        mapping_hidden: width of the style mapping MLP.
        structure_channels: channels of ``t``.
        structure_down: downsamplings of the structure encoder.
        structure_size: side of ``t`` (``image_size / 2**structure_down``).
        structure_noise_dim: length of ``z_t``.
        spade_hidden: width of SPADE's shared convolution.
        style_down: stride-2 layers of the style encoder.
        target_domain: the domain whose style ``encode`` gives when none is named
            (``STAINED``).
    """

    def __init__(
        self,
        *,
        image_channels: int,
        n_domains: int,
        base_channels: int,
        max_channels: int,
        n_down: int,
        n_res: int,
        style_dim: int,
        style_noise_dim: int,
        mapping_hidden: int,
        structure_channels: int,
        structure_down: int,
        structure_size: int,
        structure_noise_dim: int,
        spade_hidden: int,
        style_down: int,
        target_domain: int = 1,
    ) -> None:
        super().__init__()
        if not 0 <= target_domain < n_domains:
            raise ValueError(f"target_domain must lie in [0, {n_domains}), got {target_domain}")
        self.image_channels = image_channels
        self.n_domains = n_domains
        self.target_domain = target_domain
        self.style_mapping = StyleMapping(
            noise_dim=style_noise_dim,
            style_dim=style_dim,
            hidden=mapping_hidden,
            n_domains=n_domains,
        )
        self.style_encoder = StyleEncoder(
            in_channels=image_channels,
            base_channels=base_channels,
            max_channels=max_channels,
            n_down=style_down,
            style_dim=style_dim,
            n_domains=n_domains,
        )
        self.structure_mapping = StructureMapping(
            noise_dim=structure_noise_dim,
            structure_channels=structure_channels,
            structure_size=structure_size,
            hidden=spade_hidden,
        )
        self.structure_encoder = StructureEncoder(
            in_channels=image_channels,
            base_channels=base_channels,
            n_down=structure_down,
            structure_channels=structure_channels,
        )
        self.background_encoder = BackgroundEncoder(
            in_channels=image_channels,
            base_channels=base_channels,
            max_channels=max_channels,
            n_down=n_down,
        )
        self.generator = Generator(
            out_channels=image_channels,
            base_channels=base_channels,
            max_channels=max_channels,
            n_up=n_down,
            n_res=n_res,
            style_dim=style_dim,
            structure_channels=structure_channels,
            spade_hidden=spade_hidden,
        )

    def sample_style(self, z: Tensor, domain: int | Tensor) -> Tensor:
        """``s~ = M_S_y(z_s)``."""
        style: Tensor = self.style_mapping(z, domain)
        return style

    def sample_structure(self, z: Tensor) -> Tensor:
        """``t~ = M_T(z_t)``."""
        structure: Tensor = self.structure_mapping(z)
        return structure

    def encode_style(self, x: Tensor, domain: int | Tensor) -> Tensor:
        """``s = En_S_y(x)``."""
        style: Tensor = self.style_encoder(x, domain)
        return style

    def encode(
        self, x: Tensor, domain: int | Tensor | None = None, *, style_noise: Tensor | None = None
    ) -> DisentangledCode:
        """Structure and background of ``x``, and a style of ``domain``.

        Args:
            x: images ``(B, C, S, S)``.
            domain: domain of the wanted style (one index or ``(B,)``): the input's own
                domain to reconstruct, the stained domain to stain; ``None`` means
                ``target_domain`` (the stained domain by default).
            style_noise: ``z_s`` ``(B, style_noise_dim)``; given, the style comes from the
                mapping network (``s~``), otherwise from ``x`` by the style encoder.
        """
        if domain is None:
            domain = self.target_domain
        if style_noise is None:
            style = self.encode_style(x, domain)
        else:
            style = self.sample_style(style_noise, domain)
        structure: Tensor = self.structure_encoder(x)
        background: Tensor = self.background_encoder(x)
        return DisentangledCode(structure, style, background)

    def decode(self, t: Tensor, s: Tensor, bg: Tensor) -> Tensor:
        """``G(b, s, t)`` from structure ``t``, style ``s`` and background ``bg``."""
        image: Tensor = self.generator(bg, s, t)
        return image

    def translate(
        self, x: Tensor, domain: int | Tensor, *, style_noise: Tensor | None = None
    ) -> Tensor:
        """``decode(*encode(x, domain, style_noise=...))``."""
        return self.decode(*self.encode(x, domain, style_noise=style_noise))

    def parameter_count(self) -> int:
        """Scalar parameters (mappings, encoders, generator)."""
        return parameter_count(self)


def build_disentangled(config: DisentangledConfig) -> DisentangledTranslator:
    """The translator of ``config``."""
    return DisentangledTranslator(
        image_channels=config.image_channels,
        n_domains=config.n_domains,
        base_channels=config.base_channels,
        max_channels=config.max_channels,
        n_down=config.n_down,
        n_res=config.n_res,
        style_dim=config.style_dim,
        style_noise_dim=config.style_noise_dim,
        mapping_hidden=config.mapping_hidden,
        structure_channels=config.structure_channels,
        structure_down=config.structure_down,
        structure_size=config.image_size // 2**config.structure_down,
        structure_noise_dim=config.structure_noise_dim,
        spade_hidden=config.spade_hidden,
        style_down=config.disc_down,
        target_domain=STAINED,
    )


def build_disentangled_discriminator(config: DisentangledConfig) -> MultiHeadDiscriminator:
    """The multi-head critic of ``config``."""
    return MultiHeadDiscriminator(
        in_channels=config.image_channels,
        base_channels=config.disc_channels,
        max_channels=config.max_channels,
        n_down=config.disc_down,
        n_domains=config.n_domains,
    )
