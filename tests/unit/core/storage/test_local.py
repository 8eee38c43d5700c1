from __future__ import annotations

import hashlib
import io
import urllib.request
from pathlib import Path

import pytest

from stainless.core.storage import (
    InvalidKeyError,
    ObjectIntegrityError,
    ObjectNotFoundError,
    ObjectStore,
)
from stainless.core.storage.local import LocalObjectStore


@pytest.fixture
def store(tmp_path: Path) -> LocalObjectStore:
    return LocalObjectStore(tmp_path / "store")


def test_is_an_object_store(store: LocalObjectStore) -> None:
    assert isinstance(store, ObjectStore)


def test_put_get_stat_stream(store: LocalObjectStore) -> None:
    info = store.put("raw/a.png", b"\x89PNGdata", content_type="image/png")
    assert info.size == 8
    assert store.get("raw/a.png") == b"\x89PNGdata"
    assert store.stat("raw/a.png").content_type == "image/png"
    assert b"".join(store.stream("raw/a.png", chunk_size=3)) == b"\x89PNGdata"


def test_content_type_is_kept_when_it_differs_from_the_extension(store: LocalObjectStore) -> None:
    store.put("raw/blob.png", b"x", content_type="application/x-custom")
    assert store.stat("raw/blob.png").content_type == "application/x-custom"


def test_put_from_stream_with_and_without_length(store: LocalObjectStore) -> None:
    payload = bytes(range(256)) * 9000
    store.put("big/one.bin", io.BytesIO(payload), length=len(payload))
    store.put("big/two.bin", io.BytesIO(payload))
    assert store.get("big/one.bin") == payload
    assert store.get("big/two.bin") == payload


def test_list_exists_delete(store: LocalObjectStore) -> None:
    for key in ("b/2", "a/1", "a/sub/3", "c"):
        store.put(key, b"x")
    assert list(store.list("a/")) == ["a/1", "a/sub/3"]
    assert list(store.list()) == ["a/1", "a/sub/3", "b/2", "c"]
    assert store.exists("c")
    store.delete("c")
    store.delete("c")
    assert not store.exists("c")


def test_missing_object(store: LocalObjectStore) -> None:
    with pytest.raises(ObjectNotFoundError, match="nope"):
        store.get("nope")
    with pytest.raises(ObjectNotFoundError):
        store.stream("nope")
    with pytest.raises(ObjectNotFoundError):
        store.stat("nope")


def test_presigned_get_is_a_readable_uri(store: LocalObjectStore) -> None:
    store.put("p/q.txt", b"hello")
    with urllib.request.urlopen(store.presigned_get("p/q.txt")) as response:
        assert response.read() == b"hello"


def test_bad_keys_touch_nothing(store: LocalObjectStore) -> None:
    with pytest.raises(InvalidKeyError):
        store.put("../escape", b"x")
    with pytest.raises(InvalidKeyError):
        store.get("a/../../etc/passwd")
    assert not (store.root.parent / "escape").exists()
    assert list(store.list()) == []


class _Broken(io.RawIOBase):
    def __init__(self) -> None:
        self.sent = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray) -> int:  # type: ignore[override]
        if self.sent > 3:
            raise ConnectionError("client went away")
        self.sent += 1
        buffer[:4] = b"abcd"
        return 4


def test_failed_write_leaves_nothing_and_keeps_the_old_object(store: LocalObjectStore) -> None:
    store.put("k/obj", b"old")
    with pytest.raises(ConnectionError):
        store.put("k/obj", io.BufferedReader(_Broken()))
    assert store.get("k/obj") == b"old"
    assert [p.name for p in (store.root / "k").iterdir()] == ["obj"]


def test_short_stream_is_refused(store: LocalObjectStore) -> None:
    with pytest.raises(ValueError, match="expected 10 bytes"):
        store.put("k/short", io.BytesIO(b"12345"), length=10)
    assert not store.exists("k/short")
    assert list((store.root / "k").iterdir()) == []


def _chunks(data: bytes, size: int = 3) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def test_a_stream_is_stored_when_its_length_and_digest_hold(store: LocalObjectStore) -> None:
    data = b"field bytes as they arrive"
    digest = hashlib.sha256(data).hexdigest()
    info = store.put_stream(
        "raw/s/f.received", iter(_chunks(data)), length=len(data), sha256=digest.upper()
    )
    assert (info.size, store.get("raw/s/f.received")) == (len(data), data)


@pytest.mark.parametrize(
    ("length", "wrong_digest", "reason"),
    [(26, True, "SHA-256"), (30, False, "26 bytes arrived"), (20, False, "more than the 20")],
)
def test_a_stream_of_another_length_or_digest_stores_nothing(
    store: LocalObjectStore, length: int, wrong_digest: bool, reason: str
) -> None:
    data = b"field bytes as they arrive"
    digest = "0" * 64 if wrong_digest else hashlib.sha256(data).hexdigest()
    with pytest.raises(ObjectIntegrityError, match=reason):
        store.put_stream("raw/s/f.received", iter(_chunks(data)), length=length, sha256=digest)
    assert not store.exists("raw/s/f.received")
    assert list((store.root / "raw/s").iterdir()) == []
