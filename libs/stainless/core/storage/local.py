"""Object store in a local directory (embedded default). Writes are atomic."""

from __future__ import annotations

import json
import mimetypes
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import BinaryIO

from stainless.core.storage.base import DEFAULT_CHUNK, ObjectInfo, ObjectNotFoundError
from stainless.core.storage.integrity import CheckedChunks
from stainless.core.storage.keys import validate_key, validate_prefix

_TMP_SUFFIX = ".partial"
_META_DIR = ".meta"


class LocalObjectStore:
    """Objects as files under ``root``; a write goes to a temp file that is renamed in place."""

    def __init__(self, root: Path) -> None:
        self._root = Path(root).resolve()
        self._root.mkdir(parents=True, exist_ok=True)

    @property
    def root(self) -> Path:
        return self._root

    def _path(self, key: str) -> Path:
        path = (self._root / validate_key(key)).resolve()
        if self._root not in path.parents:
            raise ValueError(f"object key {key!r} resolves outside the store")
        return path

    def _meta_path(self, key: str) -> Path:
        return self._root / _META_DIR / f"{key}.json"

    def put(
        self,
        key: str,
        data: bytes | BinaryIO,
        *,
        length: int | None = None,
        content_type: str = "application/octet-stream",
    ) -> ObjectInfo:
        def write(handle: BinaryIO) -> None:
            if isinstance(data, bytes | bytearray | memoryview):
                handle.write(data)
            else:
                _copy(data, handle, length)

        return self._write(key, write, length=length, content_type=content_type)

    def put_stream(
        self,
        key: str,
        chunks: Iterable[bytes],
        *,
        length: int,
        sha256: str,
        content_type: str = "application/octet-stream",
    ) -> ObjectInfo:
        checked = CheckedChunks(chunks, key=key, length=length, sha256=sha256)

        def write(handle: BinaryIO) -> None:
            for chunk in checked:
                handle.write(chunk)
            checked.verify()

        return self._write(key, write, length=length, content_type=content_type)

    def _write(
        self,
        key: str,
        write: Callable[[BinaryIO], None],
        *,
        length: int | None,
        content_type: str,
    ) -> ObjectInfo:
        """``write`` fills a temporary file that replaces the object only once it is whole."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.", suffix=_TMP_SUFFIX
        )
        try:
            with os.fdopen(fd, "wb") as handle:
                write(handle)
                handle.flush()
                os.fsync(handle.fileno())
            size = os.path.getsize(tmp_name)
            if length is not None and length >= 0 and size != length:
                raise ValueError(f"expected {length} bytes for {key!r}, got {size}")
            self._write_meta(key, content_type)
            os.replace(tmp_name, path)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        return ObjectInfo(key=key, size=size, content_type=content_type)

    def _write_meta(self, key: str, content_type: str) -> None:
        guessed = mimetypes.guess_type(key)[0] or "application/octet-stream"
        meta = self._meta_path(key)
        if content_type == guessed:
            meta.unlink(missing_ok=True)
            return
        meta.parent.mkdir(parents=True, exist_ok=True)
        tmp = meta.with_name(meta.name + _TMP_SUFFIX)
        tmp.write_text(json.dumps({"content_type": content_type}))
        os.replace(tmp, meta)

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            raise ObjectNotFoundError(key) from None

    def stream(self, key: str, *, chunk_size: int = DEFAULT_CHUNK) -> Iterator[bytes]:
        path = self._path(key)
        if not path.is_file():
            raise ObjectNotFoundError(key)
        return self._chunks(path, chunk_size)

    @staticmethod
    def _chunks(path: Path, chunk_size: int) -> Iterator[bytes]:
        with path.open("rb") as handle:
            while chunk := handle.read(chunk_size):
                yield chunk

    def stat(self, key: str) -> ObjectInfo:
        path = self._path(key)
        if not path.is_file():
            raise ObjectNotFoundError(key)
        meta = self._meta_path(key)
        if meta.is_file():
            content_type = json.loads(meta.read_text())["content_type"]
        else:
            content_type = mimetypes.guess_type(key)[0] or "application/octet-stream"
        return ObjectInfo(key=key, size=path.stat().st_size, content_type=content_type)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> Iterator[str]:
        validate_prefix(prefix)
        keys = []
        for dirpath, dirnames, filenames in os.walk(self._root):
            if Path(dirpath) == self._root:
                dirnames[:] = [d for d in dirnames if d != _META_DIR]
            rel = Path(dirpath).relative_to(self._root).as_posix()
            for name in filenames:
                if name.endswith(_TMP_SUFFIX):
                    continue
                key = name if rel == "." else f"{rel}/{name}"
                if key.startswith(prefix):
                    keys.append(key)
        return iter(sorted(keys))

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)
        self._meta_path(key).unlink(missing_ok=True)

    def presigned_get(self, key: str, *, expires: timedelta = timedelta(hours=1)) -> str:
        """A ``file://`` URI: the local store has no server to sign for."""
        path = self._path(key)
        if not path.is_file():
            raise ObjectNotFoundError(key)
        return path.as_uri()


def _copy(source: BinaryIO, target: BinaryIO, length: int | None) -> None:
    if length is None or length < 0:
        shutil.copyfileobj(source, target, DEFAULT_CHUNK)
        return
    remaining = length
    while remaining > 0:
        chunk = source.read(min(DEFAULT_CHUNK, remaining))
        if not chunk:
            break
        target.write(chunk)
        remaining -= len(chunk)
