"""Decoding and checking the crops a dataset holds (DIC 16-bit gray, brightfield 8-bit RGB).

Every failure is a :class:`BadImage` whose message is the reason a file is skipped.
"""

from __future__ import annotations

import io

import cv2
import numpy as np
import numpy.typing as npt
import tifffile

from stainless.core.storage import ObjectStore
from stainless.imaging.codecs import TIFF_SIGNATURES
from stainless.imaging.inputs import DIC_HIGH

__all__ = ["BadImage", "decode_image", "read_crop", "to_bf", "to_dic", "to_mask"]

U8_TO_DIC = DIC_HIGH / 255.0
"""8-bit DIC crops are widened to the DIC range so that ``dic_unit`` maps them as ``v / 255``."""


class BadImage(ValueError):
    """A file that is not a usable crop; the message says why."""


def decode_image(data: bytes) -> np.ndarray:
    """Pixels as stored (gray ``HxW`` or colour ``HxWxC`` in RGB(A) order).

    Raises:
        BadImage: empty or undecodable data, or an image without pixels.
    """
    if not data:
        raise BadImage("empty file")
    image: np.ndarray | None = None
    if data[:4] in TIFF_SIGNATURES:
        try:
            image = np.asarray(tifffile.imread(io.BytesIO(data)))
        except Exception as exc:  # noqa: BLE001 - any decoder failure is a bad file
            raise BadImage(f"undecodable TIFF: {exc}") from None
    else:
        buffer = np.frombuffer(data, dtype=np.uint8)
        decoded = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
        if decoded is None:
            raise BadImage("undecodable: not a PNG, TIFF or JPEG image")
        image = np.asarray(decoded)
        if image.ndim == 3 and image.shape[2] == 3:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        elif image.ndim == 3 and image.shape[2] == 4:
            image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim not in (2, 3) or image.size == 0 or min(image.shape[:2]) < 1:
        raise BadImage(f"no usable pixels (shape {image.shape})")
    return image


def _channels(image: np.ndarray) -> int:
    return 1 if image.ndim == 2 else int(image.shape[2])


def to_dic(image: np.ndarray) -> npt.NDArray[np.uint16]:
    """A DIC crop as 16-bit grayscale; 8-bit is widened (``v · DIC_HIGH / 255``).

    A gray image saved with three equal colour channels is accepted as gray.

    Raises:
        BadImage: colour pixels or a dtype other than 8/16-bit unsigned.
    """
    if image.ndim == 3:
        colour = image[:, :, :3]
        if (
            image.shape[2] in (3, 4)
            and np.array_equal(colour[:, :, 0], colour[:, :, 1])
            and (np.array_equal(colour[:, :, 0], colour[:, :, 2]))
        ):
            image = colour[:, :, 0]
        else:
            raise BadImage(
                f"wrong channel count: a DIC crop is grayscale, got {_channels(image)} channels"
            )
    if image.dtype == np.uint16:
        return np.ascontiguousarray(image)
    if image.dtype == np.uint8:
        widened = np.rint(image.astype(np.float64) * U8_TO_DIC)
        return widened.astype(np.uint16)
    raise BadImage(f"unsupported DIC pixel type {image.dtype} (8- or 16-bit unsigned)")


def to_bf(image: np.ndarray) -> npt.NDArray[np.uint8]:
    """A brightfield crop as 8-bit RGB (alpha dropped, 16-bit scaled down).

    Raises:
        BadImage: not three colour channels (four with alpha), or an unsupported dtype.
    """
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise BadImage(
            f"wrong channel count: a brightfield crop is RGB, got {_channels(image)} channels"
        )
    rgb = image[:, :, :3]
    if rgb.dtype == np.uint8:
        return np.ascontiguousarray(rgb)
    if rgb.dtype == np.uint16:
        return np.ascontiguousarray(np.rint(rgb.astype(np.float64) / 257.0).astype(np.uint8))
    raise BadImage(f"unsupported brightfield pixel type {rgb.dtype} (8- or 16-bit unsigned)")


def to_mask(image: np.ndarray) -> npt.NDArray[np.uint8]:
    """A 4-class mask (values 0–3) as 8-bit gray.

    Raises:
        BadImage: colour pixels or values outside 0–3.
    """
    if image.ndim != 2:
        raise BadImage(f"wrong channel count: a mask is single-channel, got {_channels(image)}")
    if image.size and (image.min() < 0 or image.max() > 3):
        raise BadImage("a mask holds only 0 background, 1 red cell, 2 cytoplasm, 3 nucleus")
    return image.astype(np.uint8)


def read_crop(store: ObjectStore, key: str, kind: str) -> np.ndarray:
    """A stored crop decoded and checked: ``kind`` is ``dic``, ``bf`` or ``mask``."""
    image = decode_image(store.get(key))
    if kind == "dic":
        return to_dic(image)
    if kind == "bf":
        return to_bf(image)
    if kind == "mask":
        return to_mask(image)
    raise ValueError(f"kind must be dic, bf or mask, got {kind!r}")
