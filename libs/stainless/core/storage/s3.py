"""Object store on S3 / MinIO through the ``minio`` client."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from datetime import timedelta
from typing import BinaryIO, cast
from urllib.parse import urlunsplit

import urllib3
from minio import Minio
from minio.credentials.credentials import Credentials
from minio.error import S3Error
from minio.helpers import BaseURL
from minio.signer import sign_v4_s3
from minio.time import to_amz_date, utcnow

from stainless.core.config import StoreSettings
from stainless.core.storage.base import (
    DEFAULT_CHUNK,
    ObjectInfo,
    ObjectIntegrityError,
    ObjectNotFoundError,
)
from stainless.core.storage.integrity import CheckedChunks
from stainless.core.storage.keys import validate_key, validate_prefix

_MISSING = {"NoSuchKey", "NoSuchObject", "NotFound"}
_PART_SIZE = 10 * 1024 * 1024
_DIGEST_MISMATCH = {"XAmzContentSHA256Mismatch", "BadDigest", "IncompleteBody"}
_DEFAULT_REGION = "us-east-1"


class StreamedPut:
    """A PUT whose body goes to the server while it arrives, signed with the SHA-256 the
    bytes are declared to have (the server checks it). The ``minio`` client reads a whole
    part before it sends it; this signs with ``minio``'s own signer instead."""

    def __init__(self, settings: StoreSettings) -> None:
        scheme = "https" if settings.secure else "http"
        self._url = BaseURL(f"{scheme}://{settings.endpoint}", settings.region)
        self._region = settings.region or _DEFAULT_REGION
        self._credentials = Credentials(settings.access_key, settings.secret_key.get_secret_value())
        self._http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=10, read=300), retries=False, maxsize=8
        )

    def __call__(
        self,
        bucket: str,
        key: str,
        body: Iterable[bytes],
        *,
        length: int,
        sha256: str,
        content_type: str,
    ) -> None:
        """Raises:
        ObjectIntegrityError: the server found another digest or length.
        S3Error: any other refusal."""
        url = self._url.build(
            method="PUT", region=self._region, bucket_name=bucket, object_name=key
        )
        date = utcnow()
        headers = sign_v4_s3(
            method="PUT",
            url=url,
            region=self._region,
            headers={
                "Host": url.netloc,
                "Content-Length": str(length),
                "Content-Type": content_type,
                "x-amz-content-sha256": sha256,
                "x-amz-date": to_amz_date(date),
            },
            credentials=self._credentials,
            content_sha256=sha256,
            date=date,
        )
        response = self._http.urlopen(
            "PUT", urlunsplit(url), body=body, headers=headers, preload_content=True
        )
        if response.status == 200:
            return
        try:
            error = S3Error.fromxml(response)
        except ET.ParseError:
            raise S3Error(
                response,
                str(response.status),
                response.reason,
                f"/{bucket}/{key}",
                None,
                None,
                bucket_name=bucket,
                object_name=key,
            ) from None
        if error.code in _DIGEST_MISMATCH:
            raise ObjectIntegrityError(f"the store refused {key!r}: {error.message or error.code}")
        raise error


class S3ObjectStore:
    """Objects in one bucket; S3 makes each put atomic (a failed upload leaves nothing)."""

    def __init__(self, client: Minio, bucket: str, streamed: StreamedPut) -> None:
        self._client = client
        self._bucket = bucket
        self._streamed = streamed

    @classmethod
    def from_settings(cls, settings: StoreSettings) -> S3ObjectStore:
        client = Minio(
            settings.endpoint,
            access_key=settings.access_key,
            secret_key=settings.secret_key.get_secret_value(),
            secure=settings.secure,
            region=settings.region,
        )
        return cls(client, settings.bucket, StreamedPut(settings))

    @property
    def bucket(self) -> str:
        return self._bucket

    def ensure_bucket(self) -> None:
        if not self._client.bucket_exists(self._bucket):
            self._client.make_bucket(self._bucket)

    def put(
        self,
        key: str,
        data: bytes | BinaryIO,
        *,
        length: int | None = None,
        content_type: str = "application/octet-stream",
    ) -> ObjectInfo:
        validate_key(key)
        if isinstance(data, bytes | bytearray | memoryview):
            length = len(data)
            stream: BinaryIO = io.BytesIO(data)
        else:
            stream = data
        size = -1 if length is None or length < 0 else length
        part_size = _PART_SIZE if size < 0 else 0
        counted = _Counted(stream)
        self._client.put_object(
            self._bucket,
            key,
            cast(BinaryIO, counted),  # the client only reads from it
            size,
            content_type=content_type,
            part_size=part_size,
        )
        # No read back: a workload may write where it may not read (its object-store policy).
        return ObjectInfo(key=key, size=counted.read_bytes, content_type=content_type)

    def put_stream(
        self,
        key: str,
        chunks: Iterable[bytes],
        *,
        length: int,
        sha256: str,
        content_type: str = "application/octet-stream",
    ) -> ObjectInfo:
        validate_key(key)
        checked = CheckedChunks(chunks, key=key, length=length, sha256=sha256)
        try:
            self._streamed(
                self._bucket,
                key,
                checked,
                length=length,
                sha256=sha256.lower(),
                content_type=content_type,
            )
            checked.verify()  # a server that does not check the digest itself stored them
        except ObjectIntegrityError:
            # the server may hold what it took: the declared length, before a surplus
            # chunk raised, or bytes of another digest
            self.delete(key)
            raise
        return ObjectInfo(key=key, size=checked.size, content_type=content_type)

    def get(self, key: str) -> bytes:
        return b"".join(self.stream(key))

    def stream(self, key: str, *, chunk_size: int = DEFAULT_CHUNK) -> Iterator[bytes]:
        validate_key(key)
        try:
            response = self._client.get_object(self._bucket, key)
        except S3Error as exc:
            raise _translate(exc, key) from None
        return self._chunks(response, chunk_size)

    @staticmethod
    def _chunks(response: object, chunk_size: int) -> Iterator[bytes]:
        try:
            yield from response.stream(chunk_size)  # type: ignore[attr-defined]
        finally:
            response.close()  # type: ignore[attr-defined]
            response.release_conn()  # type: ignore[attr-defined]

    def stat(self, key: str) -> ObjectInfo:
        validate_key(key)
        try:
            stat = self._client.stat_object(self._bucket, key)
        except S3Error as exc:
            raise _translate(exc, key) from None
        return ObjectInfo(
            key=key,
            size=int(stat.size or 0),
            content_type=stat.content_type or "application/octet-stream",
        )

    def exists(self, key: str) -> bool:
        try:
            self.stat(key)
        except ObjectNotFoundError:
            return False
        return True

    def list(self, prefix: str = "") -> Iterator[str]:
        validate_prefix(prefix)
        objects = self._client.list_objects(self._bucket, prefix=prefix or None, recursive=True)
        return iter(sorted(obj.object_name for obj in objects if obj.object_name))

    def delete(self, key: str) -> None:
        validate_key(key)
        self._client.remove_object(self._bucket, key)

    def presigned_get(self, key: str, *, expires: timedelta = timedelta(hours=1)) -> str:
        validate_key(key)
        return self._client.presigned_get_object(self._bucket, key, expires=expires)


class _Counted:
    """A readable stream counting the bytes read from it (the size of an upload of unknown
    length)."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self.read_bytes = 0

    def read(self, size: int = -1) -> bytes:
        chunk = self._stream.read(size)
        self.read_bytes += len(chunk)
        return chunk


def _translate(exc: S3Error, key: str) -> Exception:
    if exc.code in _MISSING:
        return ObjectNotFoundError(key)
    return exc
