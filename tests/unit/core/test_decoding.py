"""Uploads decode in a memory-capped worker and are stored as their pixels only."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest
import tifffile
from PIL import Image

from stainless.core.decoding import CappedDecoder, budget
from stainless.imaging.codecs import ImageRejected, canonical, probe

MiB = 2**20


@pytest.fixture(scope="module")
def decoder() -> CappedDecoder:
    capped = CappedDecoder(256 * MiB)
    yield capped  # type: ignore[misc]
    capped.close()


def _tiff(pixels: np.ndarray, **options: object) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, pixels, **options)  # type: ignore[arg-type]
    return buffer.getvalue()


def _strip_bomb(inflated: int) -> bytes:
    """A 64x64 deflate TIFF whose one strip inflates to ``inflated`` bytes."""
    data = bytearray(_tiff(np.zeros((64, 64), np.uint8), compression="zlib"))
    with tifffile.TiffFile(io.BytesIO(bytes(data))) as tif:
        tags = tif.pages.first.tags
        offset_at = tags["StripOffsets"].valueoffset
        count_at = tags["StripByteCounts"].valueoffset
    compressor = zlib.compressobj(9)
    chunk, bomb = b"\x00" * MiB, bytearray()
    for _ in range(inflated // MiB):
        bomb += compressor.compress(chunk)
    bomb += compressor.flush()
    struct.pack_into("<I", data, offset_at, len(data))
    struct.pack_into("<I", data, count_at, len(bomb))
    return bytes(data + bomb)


def _decode(decoder: CappedDecoder, data: bytes) -> np.ndarray:
    info = probe(io.BytesIO(data))
    stored = decoder.canonical(data, info)
    return np.asarray(
        tifffile.imread(io.BytesIO(stored))
        if stored[:2] in (b"II", b"MM")
        else Image.open(io.BytesIO(stored))
    )


def test_the_stored_image_is_the_first_page_without_metadata(decoder: CappedDecoder) -> None:
    field = np.arange(64 * 80, dtype=np.uint16).reshape(64, 80)
    buffer = io.BytesIO()
    with tifffile.TiffWriter(buffer) as writer:
        writer.write(field, description="Scanner X, serial 42")
        writer.write(np.full((32, 32, 3), 200, np.uint8), description="Patient: Jane Doe")
    data = buffer.getvalue()
    info = probe(io.BytesIO(data))
    stored = decoder.canonical(data, info)
    assert b"Patient" not in stored and b"Scanner X" not in stored
    with tifffile.TiffFile(io.BytesIO(stored)) as tif:
        assert len(tif.pages) == 1
        assert np.array_equal(tif.pages.first.asarray(), field)
    assert stored == canonical(field, info)  # deterministic


def test_a_strip_that_inflates_past_its_image_is_refused(decoder: CappedDecoder) -> None:
    bomb = _strip_bomb(300 * MiB)
    assert len(bomb) < 2 * MiB
    info = probe(io.BytesIO(bomb))
    assert budget(info, 256 * MiB) < 100 * MiB  # a few times 4 KiB of pixels, plus slack
    with pytest.raises(ImageRejected, match="does not decode"):  # the cap stopped it
        decoder.canonical(bomb, info)
    small = _tiff(np.ones((64, 64), np.uint8), compression="zlib")  # the worker still serves
    assert _decode(decoder, small).sum() == 64 * 64


@pytest.mark.parametrize(
    ("pixels", "options", "reason"),
    [
        (
            np.zeros((3, 40, 50), np.uint8),
            {"photometric": "rgb", "planarconfig": "separate"},
            "planar",
        ),
        (
            np.zeros((4, 40, 50), np.uint8),
            {"photometric": "minisblack", "volumetric": True},
            "depth",
        ),
    ],
    ids=["planar RGB", "image depth"],
)
def test_only_single_2d_images_pass_the_header_check(
    pixels: np.ndarray, options: dict[str, object], reason: str
) -> None:
    with pytest.raises(ImageRejected, match=reason):
        probe(io.BytesIO(_tiff(pixels, **options)))


def test_a_png_whose_stream_runs_past_its_image_is_stored_as_its_pixels(
    decoder: CappedDecoder,
) -> None:
    width = height = 32
    raw = zlib.compress(b"\x00" * (height * (width + 1)) + b"\x00" * 50 * MiB, 9)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")
    try:
        pixels = _decode(decoder, png)
    except ImageRejected:
        return  # refused is as good as bounded
    assert pixels.shape == (height, width)


GROWTH = """
import io, sys
import numpy as np, tifffile
from stainless.imaging.codecs import canonical, decode, probe
from stainless.core import decoding
if sys.argv[1] == "prepared":
    decoding._prepare_worker()
field = (np.random.default_rng(0).random((1544, 2064)) * 30000).astype(np.uint16)
buffer = io.BytesIO()
tifffile.imwrite(buffer, field, compression="zlib", rowsperstrip=64)
stream = io.BytesIO(buffer.getvalue())
info = probe(stream)
before = decoding._virtual_bytes()
canonical(decode(stream, info), info)
print(decoding._virtual_bytes() - before, decoding.budget(info, 2**40))
"""


def test_a_prepared_worker_decodes_its_first_field_within_the_budget() -> None:
    # A fresh process grows its address space by far more than a field's budget on its
    # first decode (codec libraries loaded lazily, the strip threads' malloc arenas): the
    # worker does that once, outside the cap, so that the first upload is not refused.
    def growth(mode: str) -> tuple[int, int]:
        done = subprocess.run(
            [sys.executable, "-c", GROWTH, mode], capture_output=True, text=True, check=True
        )
        grown, allowed = map(int, done.stdout.split())
        return grown, allowed

    grown, allowed = growth("prepared")
    assert grown < allowed / 2
    cold, _ = growth("cold")  # what the cap met before (about 150 MiB against 88)
    assert cold > grown


_SERVICE = """
import io, time
import numpy as np
from stainless.imaging.codecs import encode_png, probe
from stainless.core.decoding import CappedDecoder
decoder = CappedDecoder(2**28)
data = encode_png(np.zeros((8, 8), np.uint8))
decoder.canonical(data, probe(io.BytesIO(data)))
print(*[worker.pid for worker in decoder._pool._processes.values()], flush=True)
time.sleep(120)
"""


def _running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its reaper does not)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_the_decoding_worker_dies_with_a_killed_service() -> None:
    service = subprocess.Popen([sys.executable, "-c", _SERVICE], stdout=subprocess.PIPE, text=True)
    try:
        assert service.stdout is not None
        workers = [int(pid) for pid in service.stdout.readline().split()]
        assert workers and all(_running(pid) for pid in workers)
    finally:
        service.kill()
        service.wait()
    deadline = time.monotonic() + 10
    while any(_running(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_running(pid) for pid in workers)
