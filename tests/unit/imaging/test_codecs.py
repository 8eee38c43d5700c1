from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
import tifffile

from stainless.imaging.codecs import ImageFormat, ImageRejected, decode, probe


def _tiff(array: np.ndarray, **kwargs: object) -> io.BytesIO:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, **kwargs)  # type: ignore[arg-type]
    buffer.seek(0)
    return buffer


def _png(array: np.ndarray) -> io.BytesIO:
    ok, data = cv2.imencode(".png", array)
    assert ok
    return io.BytesIO(data.tobytes())


@pytest.mark.parametrize(
    ("stream", "expected"),
    [
        (lambda: _tiff(np.zeros((40, 60), np.uint16)), (ImageFormat.TIFF, 60, 40, 1, 16)),
        (
            lambda: _tiff(np.zeros((40, 60, 3), np.uint8), photometric="rgb"),
            (ImageFormat.TIFF, 60, 40, 3, 8),
        ),
        (lambda: _png(np.zeros((40, 60), np.uint16)), (ImageFormat.PNG, 60, 40, 1, 16)),
        (lambda: _png(np.zeros((40, 60, 3), np.uint8)), (ImageFormat.PNG, 60, 40, 3, 8)),
    ],
)
def test_probe_reads_the_header_and_decode_agrees(stream, expected) -> None:  # type: ignore[no-untyped-def]
    data = stream()
    info = probe(data)
    assert (info.format, info.width, info.height, info.channels, info.bit_depth) == expected
    assert data.tell() == 0
    assert decode(data, info).shape[:2] == (40, 60)


def test_truncated_compressed_tiff_does_not_decode() -> None:
    raw = _tiff(np.arange(40 * 60, dtype=np.uint16).reshape(40, 60), compression="zlib").getvalue()
    cut = io.BytesIO(raw[: len(raw) * 2 // 3])
    with pytest.raises(ImageRejected, match="does not decode"):
        decode(cut, probe(cut))


def test_palette_png_is_refused_with_a_reason() -> None:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("P", (8, 8)).save(buffer, format="PNG")
    with pytest.raises(ImageRejected, match="palette"):
        probe(buffer)
