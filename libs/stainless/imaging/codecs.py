"""Image encodings used to store fields and crops (deterministic bytes for the same pixels)."""

from __future__ import annotations

import io

import cv2
import numpy as np
import tifffile


def encode_tiff16(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(
        buffer, image, photometric="minisblack", compression="zlib", software=None, datetime=None
    )
    return buffer.getvalue()


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of a grayscale or RGB ``uint8``/``uint16`` image."""
    pixels = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    ok, encoded = cv2.imencode(".png", pixels)
    if not ok:
        raise ValueError("PNG encoding failed")
    return bytes(encoded.tobytes())
