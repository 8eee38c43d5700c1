"""Pixel-level image quality: MSE, RMSE and SSIM (Wang et al. 2004), on images scaled to [0, 1]."""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

Image = npt.NDArray[np.generic]

_C1 = 0.01**2
_C2 = 0.03**2


def _pair(a: Image, b: Image) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    if a.ndim not in (2, 3):
        raise ValueError(f"expected HxW or HxWxC images, got shape {a.shape}")
    return np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)


def mse(a: Image, b: Image) -> float:
    """Mean squared error over every pixel and channel."""
    x, y = _pair(a, b)
    return float(np.mean((x - y) ** 2))


def rmse(a: Image, b: Image) -> float:
    return float(np.sqrt(mse(a, b)))


def ssim(a: Image, b: Image, *, data_range: float = 1.0, sigma: float = 1.5) -> float:
    """Structural similarity with an 11x11 Gaussian window (σ 1.5), averaged over channels.

    Args:
        a: image, HxW or HxWxC.
        b: image of the same shape.
        data_range: the value range of the images (1 for [0, 1] floats, 255 for uint8).
        sigma: standard deviation of the Gaussian window.
    """
    x, y = _pair(a, b)
    if data_range <= 0:
        raise ValueError(f"data_range must be positive, got {data_range}")
    x, y = x / data_range, y / data_range

    def blur(image: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return np.asarray(cv2.GaussianBlur(image, (11, 11), sigma, borderType=cv2.BORDER_REFLECT))

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    numerator = (2 * mu_x * mu_y + _C1) * (2 * cov + _C2)
    denominator = (mu_x**2 + mu_y**2 + _C1) * (var_x + var_y + _C2)
    return float(np.mean(numerator / denominator))
