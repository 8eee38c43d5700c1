"""Fréchet Inception Distance (Heusel et al. 2017) between two sets of images.

FID = ‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2 (Σ₁ Σ₂)^½) of Gaussian fits to network features.
The feature network is a torchvision model (``inception_v3``: 2048-d pool features, or
``alexnet``: 256-d globally pooled conv features) whose weights come from a configured
local file; without one it is random-initialised (seeded) and :attr:`FidMetric.provenance`
says so — every report prints it next to the number. Nothing is downloaded.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import numpy.typing as npt
import scipy.linalg
import torch
from torch import nn
from torch.nn import functional
from torchvision import models  # type: ignore[import-untyped]

F64 = npt.NDArray[np.float64]

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
NETWORKS = {"inception_v3": 299, "alexnet": 224}


def gaussian_fit(features: npt.ArrayLike) -> tuple[F64, F64]:
    """Mean and (unbiased) covariance of N x D features."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"need N x D features with N ≥ 2, got shape {x.shape}")
    return x.mean(axis=0), np.atleast_2d(np.cov(x, rowvar=False))


def frechet_distance(
    mu1: npt.ArrayLike,
    sigma1: npt.ArrayLike,
    mu2: npt.ArrayLike,
    sigma2: npt.ArrayLike,
    *,
    eps: float = 1e-6,
) -> float:
    """Fréchet distance between N(μ₁, Σ₁) and N(μ₂, Σ₂).

    When ``sqrtm(Σ₁Σ₂)`` fails or is inaccurate (Σ₁Σ₂ singular: fewer samples than
    features) it is taken of (Σ₁ + εsI)(Σ₂ + εsI), s the mean variance (at least 1e-12),
    so ε is relative to the features' scale; the imaginary part numerical error leaves
    is dropped (it must be negligible against the real one).
    """
    m1, m2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = (
        np.atleast_2d(np.asarray(sigma1, np.float64)),
        np.atleast_2d(np.asarray(sigma2, np.float64)),
    )
    if m1.shape != m2.shape or s1.shape != s2.shape or s1.shape != (m1.size, m1.size):
        raise ValueError(f"shapes differ: μ {m1.shape}, {m2.shape}; Σ {s1.shape}, {s2.shape}")
    diff = m1 - m2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        covmean = scipy.linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all() or _residual(covmean, s1 @ s2) > 1e-3:
        scale = max(float(np.mean(np.diagonal(s1))), float(np.mean(np.diagonal(s2))), 1e-12)
        offset = np.eye(s1.shape[0]) * eps * scale
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            covmean = scipy.linalg.sqrtm((s1 + offset) @ (s2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3 * np.abs(covmean.real).max()):
            raise ValueError(
                f"sqrtm(Σ₁Σ₂) has an imaginary part {np.abs(covmean.imag).max():.3g}: "
                "the covariances are too ill-conditioned"
            )
        covmean = covmean.real
    value = diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
    return float(max(value, 0.0))


def _residual(root: npt.NDArray[np.complex128], product: F64) -> float:
    """Largest error of ``root²`` against ``product``, relative to ``product``'s largest entry."""
    error = float(np.abs(root @ root - product).max())
    return error / max(float(np.abs(product).max()), 1e-300)


class FidMetric:
    """FID with a configurable feature network.

    Args:
        net: ``inception_v3`` (the standard FID network) or ``alexnet`` (cheaper).
        weights: a torchvision state dict of that network (e.g. its ImageNet weights, saved
            to a local file); ``None`` = random-initialised network, seeded for repeatable
            numbers.
        seed: seed of the random network.
        batch_size: images per forward pass.
    """

    def __init__(
        self,
        *,
        net: str = "inception_v3",
        weights: Path | None = None,
        seed: int = 0,
        batch_size: int = 16,
        source: str | None = None,
    ) -> None:
        """``source`` names where ``weights`` came from in the provenance (default: the
        path)."""
        if net not in NETWORKS:
            raise ValueError(f"net must be one of {sorted(NETWORKS)}, got {net!r}")
        self.net = net
        self.input_size = NETWORKS[net]
        self.batch_size = batch_size
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self._model = _build(net)
        if weights is None:
            self.provenance = (
                f"FID on {net} features with a RANDOM backbone (seed {seed}): no pretrained "
                "weights configured; values are not comparable with published FID"
            )
        else:
            if not weights.is_file():
                raise FileNotFoundError(f"FID feature weights not found at {weights}")
            state = torch.load(weights, map_location="cpu", weights_only=True)
            missing, _ = self._model.load_state_dict(state, strict=False)
            if missing:
                raise ValueError(f"the weights in {weights} lack {len(missing)} layers of {net}")
            self.provenance = (
                f"FID on torchvision {net} features with the weights from {source or weights} "
                "(not the TensorFlow FID Inception: close to, not equal to, published FID)"
            )
        self._model.eval()

    def features(self, images: npt.ArrayLike) -> F64:
        """N x D features of N images (N x H x W or N x H x W x 1|3, values in [0, 1])."""
        x = _tensor(images)
        mean = torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1)
        out = []
        with torch.no_grad():
            for start in range(0, x.shape[0], self.batch_size):
                batch = x[start : start + self.batch_size]
                batch = functional.interpolate(
                    batch,
                    size=(self.input_size, self.input_size),
                    mode="bilinear",
                    align_corners=False,
                )
                out.append(self._model((batch - mean) / std).flatten(1).double())
        result: F64 = torch.cat(out).numpy()
        return result

    def distance(self, real: npt.ArrayLike, generated: npt.ArrayLike) -> float:
        """FID between two image sets (each of at least 2 images)."""
        mu1, sigma1 = gaussian_fit(self.features(real))
        mu2, sigma2 = gaussian_fit(self.features(generated))
        return frechet_distance(mu1, sigma1, mu2, sigma2)


class _AlexFeatures(nn.Module):
    """AlexNet's conv features, globally average-pooled (256-d); state dict keys as torchvision."""

    def __init__(self) -> None:
        super().__init__()
        self.features = models.alexnet(weights=None).features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled: torch.Tensor = self.features(x).mean(dim=(2, 3))
        return pooled


def _build(net: str) -> nn.Module:
    if net == "alexnet":
        return _AlexFeatures()
    inception = models.inception_v3(
        weights=None, aux_logits=True, init_weights=True, transform_input=True
    )
    inception.fc = nn.Identity()  # the 2048-d pool features
    module: nn.Module = inception
    return module


def _tensor(images: npt.ArrayLike) -> torch.Tensor:
    array = np.asarray(images, dtype=np.float32)
    if array.ndim == 3:
        array = array[..., None]
    if array.ndim != 4 or array.shape[-1] not in (1, 3):
        raise ValueError(f"expected N x H x W (x 1|3) images, got shape {array.shape}")
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return torch.from_numpy(np.ascontiguousarray(array.transpose(0, 3, 1, 2)))
