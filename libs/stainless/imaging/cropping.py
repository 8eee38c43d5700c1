"""Centred square crops of single cells: 256 px (training) or 360 px (clinical review).

A crop is centred on an integer pixel: the centre ``(cx, cy)`` rounds to the pixel
``(X, Y) = (floor(cx + 0.5), floor(cy + 0.5))``, which lands at index ``size // 2`` of the
crop, so the crop covers ``X - size // 2 .. X - size // 2 + size - 1``. Where the square
reaches outside the field, the missing pixels are mirrored (``cv2.BORDER_REFLECT_101``:
``... 2 1 | 0 1 2 ...``) and the crop is flagged ``at_border``.

``crop_registered`` gives the brightfield crop aligned pixel for pixel with the DIC crop
at the same DIC centre: only the window is resampled (bilinear) through the inverse of
the brightfield -> DIC affine, mirroring at the brightfield field's edges.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from stainless.imaging.registration import check_affine, invert_affine

DEFAULT_SIZES = (256, 360)
"""Crop sizes (px): 256 for training, 360 for clinical review."""

_CV_DTYPES = (np.uint8, np.int8, np.uint16, np.int16, np.int32, np.float32, np.float64)


@dataclass(frozen=True, eq=False)
class Crop:
    """One square crop.

    Attributes:
        image: ``size x size`` (x C) pixels, the source's dtype.
        centre: the field pixel ``(x, y)`` at index ``(size // 2, size // 2)`` of the crop
            (for ``crop_registered``: in the DIC frame).
        size: side length in pixels.
        at_border: the square reached outside the field and was reflect-padded.
    """

    image: np.ndarray
    centre: tuple[float, float]
    size: int
    at_border: bool


def box_centre(box: Sequence[int]) -> tuple[float, float]:
    """Centre ``(x, y)`` of a box ``(x0, y0, x1, y1)`` with exclusive ends (pixel centres)."""
    if len(box) != 4:
        raise ValueError(f"a box is (x0, y0, x1, y1), got {box}")
    x0, y0, x1, y1 = (int(v) for v in box)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"empty box (needs x1 > x0 and y1 > y0): {box}")
    return (x0 + x1 - 1) / 2, (y0 + y1 - 1) / 2


class Cropper:
    """Cuts centred, reflect-padded square crops (see the module docstring)."""

    def __init__(self, *, sizes: Sequence[int] = DEFAULT_SIZES) -> None:
        """Configure the crop sizes used by ``crops`` (any size >= 1 works with ``crop``).

        Raises:
            ValueError: no size, or a size below 1.
        """
        checked = tuple(_check_size(size) for size in sizes)
        if not checked:
            raise ValueError("sizes must hold at least one crop size")
        self.sizes = checked

    def crop(self, image: np.ndarray, centre: tuple[float, float], size: int) -> Crop:
        """The ``size x size`` crop of ``image`` (HxW or HxWxC, any dtype) around ``centre``.

        Raises:
            ValueError: bad image, size below 1, or a centre outside the image.
        """
        size = _check_size(size)
        _check_image(image, "image")
        height, width = image.shape[:2]
        cx, cy = _pixel(centre, width, height)
        x0, y0 = cx - size // 2, cy - size // 2
        x1, y1 = x0 + size, y0 + size
        at_border = x0 < 0 or y0 < 0 or x1 > width or y1 > height
        if at_border:
            rows = _reflect_101(np.arange(y0, y1), height)
            cols = _reflect_101(np.arange(x0, x1), width)
            window = image[np.ix_(rows, cols)]
        else:
            window = image[y0:y1, x0:x1]
        return Crop(np.ascontiguousarray(window), (float(cx), float(cy)), size, at_border)

    def crops(self, image: np.ndarray, centre: tuple[float, float]) -> list[Crop]:
        """One crop per configured size, in order."""
        return [self.crop(image, centre, size) for size in self.sizes]

    def crop_registered(
        self,
        bf: np.ndarray,
        affine_bf_to_dic: npt.ArrayLike,
        centre_dic: tuple[float, float],
        size: int,
    ) -> Crop:
        """The brightfield crop aligned pixel for pixel with the DIC crop at ``centre_dic``.

        Args:
            bf: brightfield field, HxW or HxWxC (C <= 4, an OpenCV dtype).
            affine_bf_to_dic: 2x3, brightfield pixel -> DIC pixel.
            centre_dic: crop centre in the DIC frame; it rounds like ``crop``'s.
            size: side length in pixels.

        Returns:
            A crop whose ``centre`` is in DIC pixels and whose ``at_border`` says whether
            any sample fell outside the brightfield field (and was mirrored).

        Raises:
            ValueError: bad image, affine or size, or a non-finite centre.
        """
        size = _check_size(size)
        _check_image(bf, "bf")
        if bf.dtype.type not in _CV_DTYPES or (bf.ndim == 3 and bf.shape[2] > 4):
            raise ValueError(
                f"bf must have an OpenCV dtype and at most 4 channels, got {bf.dtype}, {bf.shape}"
            )
        affine = check_affine(affine_bf_to_dic, "affine_bf_to_dic")
        cx, cy = _pixel(centre_dic, None, None)
        x0, y0 = cx - size // 2, cy - size // 2
        dic_to_bf = invert_affine(affine)
        # crop pixel (j, i) -> DIC (x0 + j, y0 + i) -> brightfield
        window_to_bf = dic_to_bf.copy()
        window_to_bf[:, 2] = dic_to_bf[:, :2] @ np.array([x0, y0], np.float64) + dic_to_bf[:, 2]
        image = cv2.warpAffine(
            bf,
            window_to_bf,
            (size, size),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REFLECT_101,
        )
        last = size - 1
        corners = np.array([[0, 0, 1], [last, 0, 1], [0, last, 1], [last, last, 1]], np.float64)
        uv = corners @ window_to_bf.T
        height, width = bf.shape[:2]
        at_border = bool(
            np.any(uv < -1e-6)
            or np.any(uv[:, 0] > width - 1 + 1e-6)
            or np.any(uv[:, 1] > height - 1 + 1e-6)
        )
        pixels = np.asarray(image, dtype=bf.dtype).reshape((size, size, *bf.shape[2:]))
        return Crop(pixels, (float(cx), float(cy)), size, at_border)


def _reflect_101(index: npt.NDArray[np.int64], length: int) -> npt.NDArray[np.int64]:
    """Indices mirrored into ``[0, length)`` like ``cv2.BORDER_REFLECT_101`` (``2 1 | 0 1 2``)."""
    if length == 1:
        return np.zeros_like(index)
    period = 2 * (length - 1)
    folded = np.mod(index, period)
    return np.where(folded < length, folded, period - folded)


def _check_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 1:
        raise ValueError(f"a crop size must be a positive integer, got {size!r}")
    return int(size)


def _check_image(image: np.ndarray, name: str) -> None:
    if not isinstance(image, np.ndarray):
        raise ValueError(f"{name} must be a numpy array")
    if image.ndim not in (2, 3) or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"{name} must be a non-empty HxW or HxWxC array, got {image.shape}")
    if image.ndim == 3 and image.shape[2] < 1:
        raise ValueError(f"{name} has no channels: {image.shape}")


def _pixel(centre: tuple[float, float], width: int | None, height: int | None) -> tuple[int, int]:
    """The integer pixel a centre rounds to (half up), checked to lie in the field."""
    if len(centre) != 2:
        raise ValueError(f"a centre is (x, y), got {centre}")
    x, y = float(centre[0]), float(centre[1])
    if not (math.isfinite(x) and math.isfinite(y)):
        raise ValueError(f"the centre must be finite, got {centre}")
    px, py = math.floor(x + 0.5), math.floor(y + 0.5)
    if width is not None and height is not None and not (0 <= px < width and 0 <= py < height):
        raise ValueError(f"the centre {centre} lies outside the {width}x{height} field")
    return px, py
