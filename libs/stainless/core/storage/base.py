"""The object-store protocol shared by the local and S3 adapters."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import BinaryIO, Protocol, runtime_checkable

from stainless.core.storage.keys import InvalidKeyError

__all__ = ["InvalidKeyError", "ObjectInfo", "ObjectNotFoundError", "ObjectStore"]

DEFAULT_CHUNK = 1024 * 1024


class ObjectNotFoundError(KeyError):
    """No object under the key."""

    def __str__(self) -> str:
        return f"no object under key {self.args[0]!r}"


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
