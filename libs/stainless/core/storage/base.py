"""The object-store protocol shared by the local and S3 adapters."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import BinaryIO, Protocol, runtime_checkable

from stainless.core.storage.keys import InvalidKeyError

__all__ = [
    "InvalidKeyError",
    "ObjectInfo",
    "ObjectIntegrityError",
    "ObjectNotFoundError",
    "ObjectStore",
]

DEFAULT_CHUNK = 1024 * 1024


class ObjectNotFoundError(KeyError):
    """No object under the key."""

    def __str__(self) -> str:
        return f"no object under key {self.args[0]!r}"


class ObjectIntegrityError(ValueError):
    """A streamed object is not the length or the SHA-256 it was declared with: nothing was
    stored."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    content_type: str


@runtime_checkable
class ObjectStore(Protocol):
    """Put, get, stream, list and delete objects; writes are all-or-nothing."""

    def put(
        self,
        key: str,
        data: bytes | BinaryIO,
        *,
        length: int | None = None,
        content_type: str = "application/octet-stream",
    ) -> ObjectInfo:
        """Store ``data`` (bytes or a readable stream of ``length`` bytes, -1/None = unknown)."""
        ...

    def put_stream(
        self,
        key: str,
        chunks: Iterable[bytes],
        *,
        length: int,
        sha256: str,
        content_type: str = "application/octet-stream",
    ) -> ObjectInfo:
        """Store ``length`` bytes sent on to the store while ``chunks`` yields them (not read
        whole first). The object exists afterwards only if they are exactly ``length`` bytes
        whose SHA-256 is ``sha256`` (hex); write it under a key of its own (an S3 server that
        does not check the digest itself stores first, and the object is then removed).

        Raises:
            ObjectIntegrityError: another length or digest; nothing is stored.
        """
        ...

    def get(self, key: str) -> bytes: ...

    def stream(self, key: str, *, chunk_size: int = DEFAULT_CHUNK) -> Iterator[bytes]: ...

    def stat(self, key: str) -> ObjectInfo: ...

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str = "") -> Iterator[str]:
        """Keys under ``prefix`` (recursively), in lexicographic order."""
        ...

    def delete(self, key: str) -> None:
        """Remove the object; removing a missing key is not an error."""
        ...

    def presigned_get(self, key: str, *, expires: timedelta = timedelta(hours=1)) -> str: ...
