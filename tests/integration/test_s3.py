"""The object-store port on a real S3 server through the ``minio`` client."""

from __future__ import annotations

import hashlib
import io
import urllib.request
from collections.abc import Iterator

import pytest

from stainless.core.config import StoreBackend, StoreSettings
from stainless.core.storage import (
    InvalidKeyError,
    ObjectIntegrityError,
    ObjectNotFoundError,
    ObjectStore,
    create_store,
)
from stainless.core.storage.s3 import S3ObjectStore

pytestmark = pytest.mark.integration


@pytest.fixture
def store(s3_endpoint: str, request: pytest.FixtureRequest) -> S3ObjectStore:
    bucket = f"t-{request.node.name.replace('_', '-')[:40].lower()}"
    created = create_store(
        StoreSettings(backend=StoreBackend.S3, endpoint=s3_endpoint, bucket=bucket)
    )
    assert isinstance(created, S3ObjectStore)
    return created


def test_is_an_object_store(store: S3ObjectStore) -> None:
    assert isinstance(store, ObjectStore)


def test_put_get_stat_stream_list_delete(store: S3ObjectStore) -> None:
    store.put("raw/s1/a.png", b"\x89PNG1", content_type="image/png")
    store.put("raw/s1/b.tif", b"II*\x00", content_type="image/tiff")
    store.put("raw/s2/c.png", b"c")
    assert store.get("raw/s1/a.png") == b"\x89PNG1"
    assert store.stat("raw/s1/b.tif").content_type == "image/tiff"
    assert b"".join(store.stream("raw/s1/a.png", chunk_size=2)) == b"\x89PNG1"
    assert list(store.list("raw/s1/")) == ["raw/s1/a.png", "raw/s1/b.tif"]
    assert list(store.list()) == ["raw/s1/a.png", "raw/s1/b.tif", "raw/s2/c.png"]
    store.delete("raw/s1/a.png")
    assert not store.exists("raw/s1/a.png")
    assert store.exists("raw/s1/b.tif")


def test_stream_of_unknown_length_uploads_in_parts(store: S3ObjectStore) -> None:
    payload = bytes(range(256)) * (12 * 4096 + 7)  # > 10 MiB: two parts
    info = store.put("big/field.tif", io.BytesIO(payload))
    assert info.size == len(payload)
    assert store.get("big/field.tif") == payload


def test_missing_object(store: S3ObjectStore) -> None:
    with pytest.raises(ObjectNotFoundError):
        store.get("nope/x")
    with pytest.raises(ObjectNotFoundError):
        store.stat("nope/x")


def test_presigned_get_fetches_the_object(store: S3ObjectStore) -> None:
    store.put("share/x.txt", b"presigned")
    with urllib.request.urlopen(store.presigned_get("share/x.txt")) as response:
        assert response.read() == b"presigned"


def test_bad_keys_are_refused_before_any_request(store: S3ObjectStore) -> None:
    for call in (
        lambda: store.put("a/../b", b"x"),
        lambda: store.get("/abs"),
        lambda: store.delete("a//b"),
        lambda: list(store.list("../")),
    ):
        with pytest.raises(InvalidKeyError):
            call()
    assert list(store.list()) == []


def test_a_stream_goes_to_the_server_while_it_arrives(store: S3ObjectStore) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB
    digest = hashlib.sha256(data).hexdigest()
    sent: list[int] = []

    def arriving() -> Iterator[bytes]:
        for start in range(0, len(data), 64 * 1024):
            sent.append(start)
            yield data[start : start + 64 * 1024]

    info = store.put_stream(
        "raw/s/f.received", arriving(), length=len(data), sha256=digest, content_type="image/tiff"
    )
    assert info.size == len(data) and len(sent) == 16
    assert store.get("raw/s/f.received") == data
    assert store.stat("raw/s/f.received").content_type == "image/tiff"


@pytest.mark.parametrize(
    ("length", "wrong_digest", "reason"),
    [(4096, True, "SHA-256"), (5000, False, "4096 bytes arrived"), (4000, False, "more than")],
)
def test_a_stream_of_another_length_or_digest_leaves_nothing(
    store: S3ObjectStore, length: int, wrong_digest: bool, reason: str
) -> None:
    data = b"\x01" * 4096
    digest = "0" * 64 if wrong_digest else hashlib.sha256(data).hexdigest()
    chunks = [data[i : i + 1000] for i in range(0, len(data), 1000)]
    with pytest.raises(ObjectIntegrityError, match=reason):
        store.put_stream("raw/s/bad.received", iter(chunks), length=length, sha256=digest)
    assert not store.exists("raw/s/bad.received")
