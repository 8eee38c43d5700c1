"""Confidence of a generated image by noise injection into its latent code (ch. 6.2, 7.1).

Encode once, corrupt the code k times with Gaussian noise scaled to the code's own
spread, decode the k corrupted codes as one batch and compare them with the clean
output:

* δ (confidence) = mean mutual information between the clean output and each corrupted
  output (Eq. 6.7, 7.5), raw MI in nats: by default each channel with the same channel,
  ⌊√(n/5)⌋ bins for its n pixels (the thesis' rule), averaged over the channels, so a
  change of stain colour counts as much as a change of brightness
  (``mutual_information.ChannelMode``; ``POOLED`` is the one-histogram option);
* δ normalised = the same with each channel's MI divided by the entropy of the clean
  channel (bounded by 1): reported beside δ, never instead of it;
* γ (uncertainty) = per-pixel variance over the k outputs (population variance, Eq.
  7.4), averaged over channels and pixels;
* the heat map = that per-pixel variance averaged over channels, ``float32 [H, W]``.

Two variants: the whole-latent one (ch. 7.1, models 1 and 3) and the disentangled one
(ch. 6.2, Algorithm 2, model 2). The models are used as given: put them in eval mode
first (batch statistics would otherwise couple the k samples). Nothing is moved between
devices; the noise is drawn on the latent's device from ``generator`` when given.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from stainless.domain.served import ConfidenceVariant
from stainless.ml.confidence.mutual_information import ChannelMode, image_delta

F32 = npt.NDArray[np.float32]
Foreground = Tensor | Callable[[Tensor], Tensor] | None


class LatentModel(Protocol):
    """A translator with one latent code h = E(x) and a decoder D(h) (ch. 7.1).

    ``decode`` takes what ``encode`` returns (batch first, ``[B, C, ...spatial]``);
    a caller whose decoder needs a target-domain code wraps it in ``decode``.
    """

    def encode(self, x: Tensor) -> Tensor: ...

    def decode(self, latent: Tensor) -> Tensor: ...


class DisentangledModel(Protocol):
    """A translator with structure t, style s and background codes (ch. 6, model 2)."""

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]: ...

    def decode(self, t: Tensor, s: Tensor, bg: Tensor) -> Tensor: ...


WHOLE_LATENT = ConfidenceVariant.WHOLE_LATENT
"""The chapter-7 variant (noise on the whole latent code, models 1 and 3)."""
DISENTANGLED = ConfidenceVariant.DISENTANGLED
"""The chapter-6 variant (Algorithm 2: structure and style noise, model 2)."""


@dataclass(frozen=True, eq=False)
class ConfidenceResult:
    """δ (confidence, raw MI in nats), δ normalised, γ (uncertainty), heat map
    ``float32 [H, W]``, clean output, and the name of the variant that computed them.

    ``latent`` is the clean code, detached: h of the whole-latent variant (for the
    classifier and segmenter heads without encoding again), the structure code t of the
    disentangled one.
    """

    delta: float
    gamma: float
    heatmap: F32
    clean: Tensor  # the clean decode, [1, C, H, W], detached
    latent: Tensor
    delta_normalised: float
    variant: ConfidenceVariant
    channels: ChannelMode = ChannelMode.PER_CHANNEL


# ----------------------------------------------------------------------------- checks


def _check_input(x: Tensor) -> None:
    if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[0] != 1:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x must be one image [1, C, H, W], got {shape}")


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")


def _check_scale(name: str, value: float) -> None:
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be finite and non-negative, got {value}")


def _check_code(name: str, code: Tensor, min_dim: int = 2) -> None:
    if not isinstance(code, Tensor) or code.dim() < min_dim or code.shape[0] != 1:
        shape = tuple(code.shape) if isinstance(code, Tensor) else type(code).__name__
        raise ValueError(f"{name} must have batch size 1 and >= {min_dim} dims, got {shape}")


def _check_output(out: Tensor, batch: int, what: str) -> None:
    if not isinstance(out, Tensor) or out.dim() != 4 or out.shape[0] != batch:
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"decode of {what} must return [{batch}, C, H, W], got {shape}")


# ----------------------------------------------------------------------------- pieces


def _randn(shape: tuple[int, ...], like: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.randn(shape, generator=generator, dtype=like.dtype, device=like.device)


def _whole_latent_noise(
    h: Tensor,
    *,
    alpha: float,
    k: int,
    foreground: Tensor | None,
    generator: torch.Generator | None,
) -> Tensor:
    """k noise tensors ``[k, C, ...]``, masked (Eq. 7.1-7.2): std α times h's channel-wise
    std over the positions the noise reaches (inside the mask; everywhere without one), so
    that the noise's scale does not depend on how much of the crop the cell covers."""
    spatial = tuple(range(2, h.dim()))
    if foreground is None:
        sigma = alpha * h.std(dim=spatial, correction=0, keepdim=True)  # [1, C, 1, ...]
        return _randn((k, *h.shape[1:]), h, generator) * sigma
    if foreground.dim() != h.dim() or foreground.shape[:2] != (1, 1):
        raise ValueError(
            f"foreground must be [1, 1, ...] with the latent's {h.dim()} dims, "
            f"got {tuple(foreground.shape)}"
        )
    mask = torch.nn.functional.interpolate(
        foreground.to(device=h.device, dtype=torch.float32),
        size=tuple(h.shape[2:]),
        mode="nearest",
    )
    inside = (mask > 0).to(h.dtype)
    sigma = alpha * masked_std(h, inside)
    return _randn((k, *h.shape[1:]), h, generator) * sigma * inside


def masked_std(h: Tensor, inside: Tensor) -> Tensor:
    """Channel-wise population std ``[B, C, 1, ...]`` of ``h`` over the positions where
    ``inside`` (``[B, 1, ...]``, 0 or 1) is 1; 0 where none is (TorchScript)."""
    spatial = list(range(2, h.dim()))
    count = inside.sum(dim=spatial, keepdim=True).clamp_min(1.0)
    mean = (h * inside).sum(dim=spatial, keepdim=True) / count
    variance = (((h - mean) * inside) ** 2).sum(dim=spatial, keepdim=True) / count
    return variance.sqrt()


def _summarise(
    clean: Tensor,
    outputs: Tensor,
    latent: Tensor,
    variant: ConfidenceVariant,
    channels: ChannelMode,
) -> ConfidenceResult:
    """δ, γ and the heat map from the clean ``[1, C, H, W]`` and k outputs ``[k, C, H, W]``."""
    if outputs.shape[1:] != clean.shape[1:]:
        raise ValueError(
            f"corrupted outputs {tuple(outputs.shape)} do not match clean {tuple(clean.shape)}"
        )
    variance = outputs.to(torch.float64).var(dim=0, correction=0)  # [C, H, W]
    heat = variance.mean(dim=0)
    return ConfidenceResult(
        delta=image_delta(clean[0], outputs, channels=channels),
        gamma=float(heat.mean()),
        heatmap=heat.to(device="cpu", dtype=torch.float32).numpy(),
        clean=clean.detach(),
        latent=latent.detach(),
        delta_normalised=image_delta(clean[0], outputs, channels=channels, normalised=True),
        variant=variant,
        channels=ChannelMode(channels),
    )


# ----------------------------------------------------------------------------- public


def _encode_whole(
    model: LatentModel,
    x: Tensor,
    *,
    alpha: float,
    k: int,
    foreground: Foreground,
    generator: torch.Generator | None,
) -> tuple[Tensor, Tensor]:
    """The clean code h and the k noise tensors to add to it."""
    _check_input(x)
    _check_k(k)
    _check_scale("alpha", alpha)
    h = model.encode(x)
    _check_code("the latent", h, min_dim=3)
    mask = foreground(h) if callable(foreground) else foreground
    noise = _whole_latent_noise(h, alpha=alpha, k=k, foreground=mask, generator=generator)
    return h, noise


def whole_latent_confidence(
    model: LatentModel,
    x: Tensor,
    *,
    alpha: float = 3.0,
    k: int = 10,
    foreground: Foreground = None,
    generator: torch.Generator | None = None,
    channels: ChannelMode = ChannelMode.PER_CHANNEL,
) -> ConfidenceResult:
    """δ, γ and heat map by noise on the whole latent code (thesis ch. 7.1).

    Args:
        model: encoder/decoder pair, in eval mode.
        x: one input image ``[1, C, H, W]``.
        alpha: noise std as a multiple of h's channel-wise std over its spatial dims
            (Eq. 7.1; DESIGN default 3).
        k: number of corrupted codes, decoded as one batch (Eq. 7.3; default 10).
        foreground: optional mask ``[1, 1, H', W']`` (> 0 inside), or a function of the
            clean latent h giving it (e.g. the model's own segmenter); resized to the
            latent's spatial size (nearest); the noise is zero outside it (the bin() of
            Eq. 7.2).
        generator: torch generator for the noise; the same seed gives the same result.
        channels: δ's channel handling (per channel, the default, or pooled).

    Returns:
        ConfidenceResult with δ (Eq. 7.5), γ (Eq. 7.4), the per-pixel variance map and h.
    """
    with torch.no_grad():
        h, noise = _encode_whole(
            model, x, alpha=alpha, k=k, foreground=foreground, generator=generator
        )
        clean = model.decode(h)
        _check_output(clean, 1, "the clean code")
        outputs = model.decode(h + noise)
        _check_output(outputs, k, "the corrupted batch")
        return _summarise(clean, outputs, h, WHOLE_LATENT, channels)


def naive_whole_latent_confidence(
    model: LatentModel,
    x: Tensor,
    *,
    alpha: float = 3.0,
    k: int = 10,
    foreground: Foreground = None,
    generator: torch.Generator | None = None,
    channels: ChannelMode = ChannelMode.PER_CHANNEL,
) -> ConfidenceResult:
    """Reference for the benchmark: as ``whole_latent_confidence``, one full pass per output.

    The same noise is drawn (same generator calls), then each of the k corrupted outputs
    is made as a model without a shared latent would: encode the input again, add its
    noise, decode (k + 1 full forward passes instead of one encode and 2 decodes).

    Args:
        model: encoder/decoder pair, in eval mode.
        x: one input image ``[1, C, H, W]``.
        alpha: noise scale (thesis Eq. 7.1).
        k: number of corrupted codes (Eq. 7.3).
        foreground: optional latent mask, or a function of h giving it (Eq. 7.2).
        generator: torch generator for the noise.
        channels: δ's channel handling.
    """
    with torch.no_grad():
        h, noise = _encode_whole(
            model, x, alpha=alpha, k=k, foreground=foreground, generator=generator
        )
        clean = model.decode(h)
        _check_output(clean, 1, "the clean code")
        singles = []
        for i in range(k):
            out = model.decode(model.encode(x) + noise[i : i + 1])
            _check_output(out, 1, f"corrupted code {i}")
            singles.append(out)
        return _summarise(clean, torch.cat(singles, dim=0), h, WHOLE_LATENT, channels)


def disentangled_confidence(
    model: DisentangledModel,
    x: Tensor,
    *,
    alpha: float = 3.0,
    beta: float = 7.0,
    k: int = 20,
    generator: torch.Generator | None = None,
    channels: ChannelMode = ChannelMode.PER_CHANNEL,
) -> ConfidenceResult:
    """δ, γ and heat map by noise on the structure and style codes (thesis ch. 6.2).

    As in Algorithm 2, half of the k outputs have a corrupted structure code
    (t + η, η ~ N(0, (α·std(t))²)) and the other half a corrupted style code
    (s + ψ, ψ ~ N(0, (β·std(s))²)), the other codes and the background code kept;
    ``ceil(k/2)`` structure samples come first, then ``floor(k/2)`` style samples, all
    decoded as one batch. δ is the mean MI over the k outputs (Algorithm 2, line 12).
    The std is over the whole code of the (single) sample. The style is the one
    ``model.encode`` gives: Algorithm 2 samples it from the mapping network
    (``adapters.SampledStyleModel`` does so for model 2).

    Args:
        model: structure/style/background encoder and generator, in eval mode.
        x: one input image ``[1, C, H, W]``.
        alpha: structure noise scale (σ_t = α Ω(t), Eq. 6.6; default 3).
        beta: style noise scale (σ_s = β Ω(s), Eq. 6.6; default 7).
        k: number of corrupted outputs (default 20, thesis ch. 6.3).
        generator: torch generator for the noise; the same seed gives the same result.
        channels: δ's channel handling (per channel, the default, or pooled).

    Returns:
        ConfidenceResult with δ (Eq. 6.7 / Algorithm 2), γ and the per-pixel variance map.
    """
    _check_input(x)
    _check_k(k)
    _check_scale("alpha", alpha)
    _check_scale("beta", beta)
    with torch.no_grad():
        t, s, bg = model.encode(x)
        _check_code("the structure code", t)
        _check_code("the style code", s)
        _check_code("the background code", bg, min_dim=1)
        k_t, k_s = k - k // 2, k // 2
        eta = _randn((k_t, *t.shape[1:]), t, generator) * (alpha * t.std(correction=0))
        psi = _randn((k_s, *s.shape[1:]), s, generator) * (beta * s.std(correction=0))
        ts = torch.cat([t + eta, t.expand(k_s, *t.shape[1:])], dim=0)
        ss = torch.cat([s.expand(k_t, *s.shape[1:]), s + psi], dim=0)
        bgs = bg.expand(k, *bg.shape[1:]).contiguous()
        clean = model.decode(t, s, bg)
        _check_output(clean, 1, "the clean codes")
        outputs = model.decode(ts.contiguous(), ss.contiguous(), bgs)
        _check_output(outputs, k, "the corrupted batch")
        return _summarise(clean, outputs, t, DISENTANGLED, channels)
