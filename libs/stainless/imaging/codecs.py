"""Field and crop images to bytes and back.

Encoding gives deterministic bytes for the same pixels (fields and crops in the store).
Decoding an uploaded image reads its header first (``probe``) and only then its pixels
(``decode``), so an image claiming an absurd size is refused without allocating them.
Only the first page of a TIFF is read, and only a single 2-D image (grey, or RGB with
interleaved samples) with every axis of its header counted. ``canonical`` re-encodes the
decoded pixels without metadata or further pages: what the store keeps of an upload.
A compressed strip can still inflate past its image: run ``decode`` where memory is
capped (``stainless.core.decoding``).
"""

from __future__ import annotations

import io
import os
import struct
from dataclasses import dataclass
from enum import StrEnum
from typing import BinaryIO

import cv2
import numpy as np
import tifffile
from PIL import Image


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


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}
_DECODE_WORKERS = min(4, os.cpu_count() or 1)  # strips of a TIFF decode in parallel


class ImageFormat(StrEnum):
    PNG = "png"
    TIFF = "tiff"


class ImageRejected(ValueError):
    """The upload is not an acceptable field image; the message says why."""


@dataclass(frozen=True)
class ImageInfo:
    format: ImageFormat
    width: int
    height: int
    channels: int
    bit_depth: int

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def content_type(self) -> str:
        return "image/png" if self.format is ImageFormat.PNG else "image/tiff"


def probe(stream: BinaryIO) -> ImageInfo:
    """Read the image header (and nothing more); the stream is left at its start."""
    stream.seek(0)
    head = stream.read(33)
    stream.seek(0)
    if not head:
        raise ImageRejected("the upload is empty (0 bytes)")
    if head.startswith(PNG_SIGNATURE):
        return _probe_png(head)
    if head[:4] in TIFF_SIGNATURES:
        return _probe_tiff(stream)
    raise ImageRejected("the upload is not a PNG or TIFF image")


def _probe_png(head: bytes) -> ImageInfo:
    if len(head) < 33 or head[12:16] != b"IHDR":
        raise ImageRejected("truncated PNG: no complete IHDR header")
    width, height, depth, colour = struct.unpack(">IIBB", head[16:26])
    if colour not in _PNG_CHANNELS:
        raise ImageRejected(f"PNG colour type {colour} is not valid")
    if colour == 3:
        raise ImageRejected("palette PNGs are not accepted: send grayscale or RGB")
    if width == 0 or height == 0:
        raise ImageRejected("PNG header gives a zero width or height")
    return ImageInfo(ImageFormat.PNG, width, height, _PNG_CHANNELS[colour], depth)


def _probe_tiff(stream: BinaryIO) -> ImageInfo:
    try:
        with tifffile.TiffFile(stream, name="upload.tif") as tif:
            page = tif.pages.first
            shape = tuple(int(n) for n in page.shape)
            samples = int(page.samplesperpixel)
            depth = int(page.bitspersample)
            planar = int(page.planarconfig) == 2
            volume = int(page.imagedepth)
    except Exception as exc:  # noqa: BLE001 - tifffile raises many types on bad headers
        raise ImageRejected(f"unreadable TIFF header: {exc}") from None
    finally:
        stream.seek(0)
    if volume != 1:
        raise ImageRejected(f"TIFF with an image depth of {volume} is not a single 2-D image")
    if samples > 1 and planar:
        raise ImageRejected("planar TIFF samples are not accepted: send interleaved RGB")
    if len(shape) != (2 if samples == 1 else 3) or (samples > 1 and shape[2] != samples):
        raise ImageRejected(
            f"TIFF of shape {shape} with {samples} sample(s) per pixel is not a single 2-D image"
        )
    height, width = shape[0], shape[1]
    if height == 0 or width == 0:
        raise ImageRejected("TIFF header gives a zero width or height")
    return ImageInfo(ImageFormat.TIFF, width, height, samples, depth)


def decode(stream: BinaryIO, info: ImageInfo) -> np.ndarray:
    """Decode the whole image, refusing truncated or inconsistent files."""
    stream.seek(0)
    try:
        if info.format is ImageFormat.TIFF:
            with tifffile.TiffFile(stream, name="upload.tif") as tif:  # the first page only
                pixels = np.asarray(tif.pages.first.asarray(maxworkers=_DECODE_WORKERS))
        else:
            with Image.open(stream) as image:
                image.load()
                pixels = np.asarray(image)
    except Exception as exc:  # noqa: BLE001 - decoders raise many types on bad data
        raise ImageRejected(f"the {info.format.upper()} image does not decode: {exc}") from None
    finally:
        stream.seek(0)
    expected = (info.height, info.width) if info.channels == 1 else (info.height, info.width, 3)
    if pixels.shape[:2] != expected[:2] or (info.channels != 1 and pixels.ndim != 3):
        raise ImageRejected(f"decoded shape {pixels.shape} does not match the header")
    return pixels


def canonical(pixels: np.ndarray, info: ImageInfo) -> bytes:
    """The decoded image re-encoded in its own format with nothing but its pixels: no
    further pages, no metadata (a scanner's label photo or tags stay out of the store)."""
    if info.format is ImageFormat.PNG:
        return encode_png(pixels)
    buffer = io.BytesIO()
    tifffile.imwrite(
        buffer,
        pixels,
        photometric="minisblack" if pixels.ndim == 2 else "rgb",
        compression="zlib",
        software=None,
        datetime=None,
        metadata=None,
    )
    return buffer.getvalue()
