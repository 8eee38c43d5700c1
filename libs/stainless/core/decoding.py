"""Uploads are decoded in a separate process whose memory is capped.

A compressed TIFF strip or PNG stream can inflate far past the image its header
describes (a decompression bomb), and the decoders allocate before they notice. The
decoding therefore runs in a worker process whose address space (``RLIMIT_AS``) is
limited, for each image, to what the worker holds at the start (the upload included) plus
a budget from the image's own header — a few times its decoded size, at most
``max_bytes``. A bomb fails there (``MemoryError``, or the worker dies and is replaced)
and the service's own memory never grows by more than the upload and its canonical
re-encoding.
"""

from __future__ import annotations

import os
import resource
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import cache
from multiprocessing import get_context

import structlog

from stainless.imaging.codecs import ImageInfo, ImageRejected

__all__ = ["CappedDecoder", "budget", "shared_decoder"]

log = structlog.get_logger(__name__)

_DECODE_TIMEOUT_S = 120.0


_WORKING_COPIES = 4  # decoded pixels, the decoder's buffers, the re-encoding
_SLACK = 64 * 2**20


def _die_with_parent(interval_s: float = 1.0) -> None:
    """End this worker once the service that started it is gone (stopped by SIGTERM or
    SIGKILL before it could shut its pool down): a daemon thread watches the parent pid.
    (``prctl(PR_SET_PDEATHSIG)`` would not do: it follows the parent's *thread*, and the
    request thread that started the worker may end while the service lives on.)"""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval_s)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _prepare_worker() -> None:
    """Worker initializer: die with the service, one thread per library (each thread
    reserves address space), then one small decode of each format outside the cap, so that
    what the decoders set up on first use (lazily loaded codec libraries, the strip-decoding
    threads and their malloc arenas) is part of what the worker holds at the start, not of
    an image's budget."""
    _die_with_parent()
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = "1"
    import io

    import cv2
    import numpy as np
    import tifffile

    from stainless.imaging.codecs import canonical, decode, encode_png, probe

    cv2.setNumThreads(1)
    tiff = io.BytesIO()
    tile = np.zeros((64, 64), np.uint16)
    tifffile.imwrite(tiff, tile, photometric="minisblack", compression="zlib", rowsperstrip=8)
    for data in (tiff.getvalue(), encode_png(np.zeros((8, 8, 3), np.uint8))):
        stream = io.BytesIO(data)
        info = probe(stream)
        canonical(decode(stream, info), info)


def budget(info: ImageInfo, max_bytes: int) -> int:
    """Bytes the decoding of an image of this header may allocate."""
    decoded = info.pixels * info.channels * max(1, info.bit_depth // 8)
    return min(max_bytes, _WORKING_COPIES * decoded + _SLACK)


def _virtual_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise OSError("no VmSize in /proc/self/status")


def _canonical(data: bytes, info: ImageInfo, allowed: int) -> bytes:
    """In the worker: decode and re-encode with the address space capped meanwhile."""
    import io

    from stainless.imaging.codecs import canonical, decode

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = _virtual_bytes() + allowed
    resource.setrlimit(
        resource.RLIMIT_AS, (cap if hard == resource.RLIM_INFINITY else min(cap, hard), hard)
    )
    try:
        return canonical(decode(io.BytesIO(data), info), info)
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


class CappedDecoder:
    """Decodes an upload and re-encodes it canonically in a memory-capped worker."""

    def __init__(self, max_bytes: int, *, workers: int = 1) -> None:
        self._max_bytes = max_bytes
        self._workers = workers
        self._lock = threading.Lock()
        self._pool = self._start()

    def _start(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self._workers,
            mp_context=get_context("spawn"),  # never fork a threaded server
            initializer=_prepare_worker,
        )

    def canonical(self, data: bytes, info: ImageInfo) -> bytes:
        """The image re-encoded with its pixels only.

        Raises:
            ImageRejected: it does not decode, or not within the memory cap.
        """
        pool = self._pool
        allowed = budget(info, self._max_bytes)
        limit = f"{allowed // 2**20} MiB for a {info.width}x{info.height} image"
        try:
            return pool.submit(_canonical, data, info, allowed).result(timeout=_DECODE_TIMEOUT_S)
        except MemoryError:
            raise ImageRejected(f"the image does not decode within {limit}") from None
        except (BrokenProcessPool, TimeoutError):
            self._replace(pool)
            log.warning("the decoding worker died or hung; replaced", bytes=len(data))
            raise ImageRejected(f"the image does not decode within {limit}") from None

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pool is broken:
                self._pool = self._start()
        broken.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


@cache
def shared_decoder(max_bytes: int, workers: int) -> CappedDecoder:
    """One decoder (one pool of worker processes) per service process and setting."""
    return CappedDecoder(max_bytes, workers=workers)
