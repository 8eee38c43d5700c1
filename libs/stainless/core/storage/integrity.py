"""Streamed writes checked on the way: the bytes are counted and hashed as they pass."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator

from stainless.core.storage.base import ObjectIntegrityError

__all__ = ["CheckedChunks"]


class CheckedChunks:
    """``chunks`` passed through, counted and hashed. Another count than ``length`` raises
    in the iteration (past it at once, short of it at the end), so that a write in progress
    is abandoned rather than completed or left waiting; :meth:`verify` checks the digest."""

    def __init__(self, chunks: Iterable[bytes], *, key: str, length: int, sha256: str) -> None:
        self._chunks = chunks
        self._key = key
        self._length = length
        self._expected = sha256.lower()
        self._hash = hashlib.sha256()
        self.size = 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            self.size += len(chunk)
            if self.size > self._length:
                raise ObjectIntegrityError(
                    f"more than the {self._length} bytes declared for {self._key!r}"
                )
            self._hash.update(chunk)
            yield chunk
        self._check_size()

    def _check_size(self) -> None:
        if self.size != self._length:
            raise ObjectIntegrityError(
                f"{self.size} bytes arrived for {self._key!r}, {self._length} were declared"
            )

    def verify(self) -> None:
        """Raises:
        ObjectIntegrityError: another length, or another SHA-256."""
        self._check_size()
        digest = self._hash.hexdigest()
        if digest != self._expected:
            raise ObjectIntegrityError(
                f"the SHA-256 of {self._key!r} is {digest}, not {self._expected}"
            )
