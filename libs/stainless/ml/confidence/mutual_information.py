"""Mutual information between two images from a binned joint histogram (thesis ch. 7.1).

Each image is cut into ``bins`` equal-width bins over its own min..max range (the maximum
falls in the last bin; a constant image is all bin 0) and MI, in nats, is read off the
joint histogram of the two label images:

``MI(X; Y) = sum_xy p(x, y) log(p(x, y) / (p(x) p(y)))``  (thesis Eq. 7.5)

with ``bins = floor(sqrt(n / 5))`` for ``n`` values by default (the thesis' rule, after
its reference [16], where ``n`` is the image's pixel count). The result equals
``sklearn.metrics.mutual_info_score`` applied to the same labels. Labels are computed in
float64 so that the numpy and the batched torch versions bin every pixel identically.

A colour image has three values per pixel. δ (``channel_mutual_information``) is by
default the MI of each channel with the same channel, bins from the pixel count, averaged
over the channels (``ChannelMode.PER_CHANNEL``): raw MI in nats on the thesis' scale.
``ChannelMode.POOLED`` puts every value of the image in one histogram (R with R, G with
G, B with B, bins from the value count), the estimator the first versions used; it is a
named option, not the thesis' rule. The entropy-normalised δ (each channel's MI divided by
the entropy of its clean labels, so bounded by 1) is a different quantity, reported
beside the raw one under its own name, never instead of it.
"""

from __future__ import annotations

import math
from enum import StrEnum

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]

ImageLike = npt.ArrayLike | Tensor


def default_bins(n: int) -> int:
    """Number of bins per image axis, ``floor(sqrt(n / 5))`` and at least 1.

    Args:
        n: number of pixels of one image (thesis ch. 7.1, the ⌊√(n/5)⌋ rule).
    """
    if n < 1:
        raise ValueError(f"the number of pixels must be positive, got {n}")
    # floor(sqrt(x)) == isqrt(floor(x)) for x >= 0, exact for any n.
    return max(1, math.isqrt(n // 5))


def _as_float64(image: ImageLike, name: str) -> F64:
    if isinstance(image, Tensor):
        array = image.detach().to(device="cpu", dtype=torch.float64).numpy()
    else:
        array = np.asarray(image, dtype=np.float64)
    array = array.reshape(-1)
    if array.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


def bin_labels(image: ImageLike, *, bins: int) -> I64:
    """Equal-width bin index (0..bins-1) of every pixel over the image's own range.

    Args:
        image: any shape, numpy or torch; flattened.
        bins: number of bins (thesis ch. 7.1).

    Returns:
        int64 labels, flattened.
    """
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    values = _as_float64(image, "image")
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, np.int64)
    labels = np.floor((values - low) / (high - low) * bins)
    return np.clip(labels, 0, bins - 1).astype(np.int64)


def _mi_from_counts(joint: F64) -> float:
    """MI in nats from a joint count table (rows: first image's bins)."""
    n = joint.sum()
    rows = joint.sum(axis=1)
    cols = joint.sum(axis=0)
    if np.count_nonzero(rows) < 2 or np.count_nonzero(cols) < 2:
        return 0.0  # a constant label image carries no information (exactly 0)
    i, j = np.nonzero(joint)
    c = joint[i, j]
    terms = (c / n) * (np.log(c) + math.log(n) - np.log(rows[i]) - np.log(cols[j]))
    return max(0.0, float(terms.sum()))


def mutual_information(a: ImageLike, b: ImageLike, *, bins: int | None = None) -> float:
    """Mutual information (nats) between two images of the same size.

    Args:
        a: first image, numpy or torch, any shape (flattened).
        b: second image with as many pixels as ``a``.
        bins: bins per image; default ``floor(sqrt(n / 5))`` (thesis ch. 7.1, Eq. 7.5).

    Returns:
        MI >= 0; equal to ``mutual_info_score(bin_labels(a), bin_labels(b))``.
    """
    va = _as_float64(a, "a")
    vb = _as_float64(b, "b")
    if va.size != vb.size:
        raise ValueError(f"images must have the same number of pixels, got {va.size} and {vb.size}")
    nbins = default_bins(va.size) if bins is None else bins
    la = bin_labels(va, bins=nbins)
    lb = bin_labels(vb, bins=nbins)
    joint = np.bincount(la * nbins + lb, minlength=nbins * nbins).astype(np.float64)
    return _mi_from_counts(joint.reshape(nbins, nbins))


def histogram_labels(values: Tensor, bins: int) -> Tensor:
    """Bin labels of float64 ``[..., n]`` values, per row over the row's own min..max range,
    as ``bin_labels`` does per image. TorchScript: the served ``stain_confidence`` runs it.
    """
    low = values.amin(dim=-1, keepdim=True)
    span = values.amax(dim=-1, keepdim=True) - low
    constant = span <= 0
    scaled = (values - low) / torch.where(constant, torch.ones_like(span), span) * bins
    labels = torch.floor(scaled).clamp(0, bins - 1).to(torch.int64)
    return torch.where(constant, torch.zeros_like(labels), labels)


def mutual_information_rows(clean: Tensor, corrupted: Tensor, bins: int) -> Tensor:
    """MI ``[B, k]`` between each clean row ``[B, n]`` and its ``k`` outputs ``[B, k, n]``.

    The one implementation of Eq. 7.5 on tensors (float64 in, no checks): the eager
    ``image_delta`` and the served ``stain_confidence`` heads (TorchScript) both call it
    through ``channel_mutual_information``.
    """
    n = clean.shape[-1]
    reference = histogram_labels(clean, bins).unsqueeze(1)
    others = histogram_labels(corrupted, bins)
    joint_index = (reference * bins + others).flatten(0, 1)
    joint = (
        torch.zeros_like(joint_index[:, :1], dtype=torch.float64)
        .expand(-1, bins * bins)
        .contiguous()
    )
    joint.scatter_add_(1, joint_index, torch.ones_like(joint_index, dtype=torch.float64))
    joint = joint.reshape(-1, bins, bins)
    rows = joint.sum(dim=2, keepdim=True)  # the same clean marginal for every output
    cols = joint.sum(dim=1, keepdim=True)
    safe = joint > 0
    ratio = joint * n / (rows * cols).clamp_min(1.0)
    terms = torch.where(
        safe,
        joint / n * torch.log(torch.where(safe, ratio, torch.ones_like(ratio))),
        torch.zeros_like(joint),
    )
    return terms.sum(dim=(1, 2)).clamp_min(0.0).reshape(clean.shape[0], -1)


class ChannelMode(StrEnum):
    """How δ's histograms treat the channels of a colour image (see the module docstring)."""

    PER_CHANNEL = "per-channel"
    POOLED = "pooled"


def entropy_rows(clean: Tensor, bins: int) -> Tensor:
    """Entropy (nats) ``[B]`` of each row's bin labels, ``[B, n]`` float64 in (TorchScript)."""
    labels = histogram_labels(clean, bins)
    counts = torch.zeros(
        labels.shape[0], bins, dtype=torch.float64, device=labels.device
    ).scatter_add_(1, labels, torch.ones_like(labels, dtype=torch.float64))
    p = counts / float(clean.shape[-1])
    safe = p > 0
    return -torch.where(safe, p * torch.log(torch.where(safe, p, torch.ones_like(p))), p).sum(1)


def channel_mutual_information(
    clean: Tensor, corrupted: Tensor, bins: int, normalised: bool = False
) -> Tensor:
    """δ terms ``[B, k]``: per channel MI, averaged over the channels (TorchScript).

    Args:
        clean: ``[B, C, P]`` float64, P pixels per channel.
        corrupted: ``[B, k, C, P]`` float64.
        bins: bins per channel (``default_bins(P)``: the thesis' rule on the pixel count).
        normalised: divide each channel's MI by the entropy of its clean labels (0 where
            the clean channel is constant).
    """
    batch, channels, pixels = clean.shape[0], clean.shape[1], clean.shape[2]
    k = corrupted.shape[1]
    rows = clean.reshape(batch * channels, pixels)
    others = corrupted.transpose(1, 2).reshape(batch * channels, k, pixels)
    mi = mutual_information_rows(rows, others, bins)  # [B*C, k]
    if normalised:
        entropy = entropy_rows(rows, bins).unsqueeze(1)
        mi = torch.where(entropy > 0, mi / entropy.clamp_min(1e-12), torch.zeros_like(mi))
    return mi.reshape(batch, channels, k).mean(dim=1)


def image_delta(
    clean: Tensor,
    outputs: Tensor,
    *,
    channels: ChannelMode = ChannelMode.PER_CHANNEL,
    normalised: bool = False,
) -> float:
    """δ of one clean image ``[C, H, W]`` against its k outputs ``[k, C, H, W]``: the mean MI
    over the k outputs, with the channel handling ``channels`` (see the module docstring).

    Raises:
        ValueError: mismatched shapes, an empty or non-finite image.
    """
    if clean.dim() != 3 or outputs.dim() != 4 or outputs.shape[1:] != clean.shape:
        raise ValueError(
            f"need clean [C, H, W] and outputs [k, C, H, W] of its size, got "
            f"{tuple(clean.shape)} and {tuple(outputs.shape)}"
        )
    if clean.numel() == 0 or outputs.shape[0] < 1:
        raise ValueError("the images are empty")
    ref = clean.detach().to(device=outputs.device, dtype=torch.float64)
    others = outputs.detach().to(dtype=torch.float64)
    if not (torch.isfinite(ref).all() and torch.isfinite(others).all()):
        raise ValueError("images contain NaN or infinite values")
    if ChannelMode(channels) is ChannelMode.POOLED:
        flat, many = ref.reshape(1, 1, -1), others.reshape(1, others.shape[0], 1, -1)
    else:
        flat = ref.reshape(1, ref.shape[0], -1)
        many = others.reshape(1, others.shape[0], others.shape[1], -1)
    bins = default_bins(flat.shape[-1])
    return float(channel_mutual_information(flat, many, bins, normalised).mean())
