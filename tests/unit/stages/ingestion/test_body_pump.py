"""The raw route's hand-over of the body from the event loop to the worker thread: every
chunk in order, and no more than the high-water mark waiting when the store is slower than
the client."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import cast

import anyio
import pytest
from fastapi import Request

from stainless.stages.ingestion.api import _BodyPump

CHUNK = 64 * 1024


class _Client:
    """A request body of ``n`` chunks, sent as fast as the loop reads it."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.sent = 0
        self.taken = 0
        self.most_waiting = 0

    async def stream(self) -> AsyncIterator[bytes]:
        for i in range(self.n):
            self.sent += 1
            self.most_waiting = max(self.most_waiting, self.sent - self.taken)
            yield bytes([i % 256]) * CHUNK


def _slow_store(client: _Client, chunks: Iterator[bytes]) -> bytes:
    received = []
    for chunk in chunks:
        client.taken += 1
        received.append(chunk)
        time.sleep(0.002)
    return b"".join(received)


def test_a_slow_store_holds_the_reading_back_at_the_high_water_mark() -> None:
    client = _Client(64)  # 4 MiB against a 512 KiB mark
    pump = _BodyPump(cast(Request, client), high_water=8 * CHUNK)

    async def main() -> bytes:
        return await pump.feed(lambda chunks: _slow_store(client, chunks))

    body = anyio.run(main)
    assert body == b"".join(bytes([i % 256]) * CHUNK for i in range(64))
    assert 8 <= client.most_waiting <= 8 + 2  # the mark, the chunk past it, the one in hand


def test_a_failing_store_stops_the_reading() -> None:
    client = _Client(64)
    pump = _BodyPump(cast(Request, client), high_water=4 * CHUNK)

    def failing(chunks: Iterator[bytes]) -> bytes:
        for i, _ in enumerate(chunks):
            if i == 2:
                raise RuntimeError("the store went away")
        return b""

    async def main() -> bytes:
        return await pump.feed(failing)

    with pytest.raises(RuntimeError, match="went away"):
        anyio.run(main)
    assert client.sent < 64  # the loop waited for room that never came, and was cancelled
