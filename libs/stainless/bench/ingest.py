"""Ingestion throughput: field uploads through the HTTP API beside plain S3 puts.

The ingestion service runs as its own process (uvicorn) on loopback, writing into
the S3 store given; the baseline puts the same bytes into the same store with
the ``minio`` client from this process. Raw uploads and plain puts take turns, field by
field, so that whatever drifts in the store (its load, what it holds) weighs on both alike;
each route answers one untimed upload first, as the baseline's client made its first
request (the bucket check) before its timing.

- ``ratio``: the raw-body route (``PUT …/fields/{index}/{modality}``) in MB/s over the plain
  put's. Its answer follows the store's write and the checks of length, digest and header;
  the decoding and canonical re-encoding happen later, in the registration stage.
- ``form_ratio``: the form route (``POST …/fields``), which decodes and re-encodes before
  it answers.
"""

from __future__ import annotations

import hashlib
import io
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from stainless.core.config import (
    ENV_PREFIX,
    DatabaseSettings,
    IngestionSettings,
    Settings,
    StoreSettings,
)
from stainless.core.db.engine import create_db_engine, session_scope
from stainless.core.db.migrate import upgrade
from stainless.core.storage.s3 import S3ObjectStore
from stainless.imaging.codecs import encode_tiff16
from stainless.imaging.phantom import PhantomConfig, generate_field
from stainless.stages.ingestion.ingestor import RECEIVED_SUFFIX
from stainless.stages.ingestion.scanners import register_scanner

Progress = Callable[[], None]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _serve(settings: Settings, port: int) -> Iterator[None]:
    """The ingestion service in a child process, configured through its environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env |= {
        "STAINLESS_DATABASE__URL": settings.database.url,
        "STAINLESS_STORE__BACKEND": settings.store.backend.value,
        "STAINLESS_STORE__ENDPOINT": settings.store.endpoint,
        "STAINLESS_STORE__BUCKET": settings.store.bucket,
        "STAINLESS_STORE__ACCESS_KEY": settings.store.access_key,
        "STAINLESS_STORE__SECRET_KEY": settings.store.secret_key.get_secret_value(),
        "STAINLESS_STORE__SECURE": str(settings.store.secure).lower(),
        "STAINLESS_LOG__LEVEL": "WARNING",
    }
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "stainless.stages.ingestion.api:app_from_environment",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=1).is_success:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the ingestion service did not start")
            time.sleep(0.2)
        yield
    finally:
        process.terminate()
        process.wait(timeout=30)


def run_ingest_bench(
    store_settings: StoreSettings,
    *,
    fields: int = 20,
    width: int = 2064,
    height: int = 1544,
    seed: int = 0,
    on_step: Progress | None = None,
) -> dict[str, Any]:
    """Upload ``fields`` DIC fields over HTTP and put the same bytes with ``minio``."""
    store = S3ObjectStore.from_settings(store_settings)
    store.ensure_bucket()
    rng = np.random.default_rng(seed)
    field = generate_field(PhantomConfig(width=width, height=height), rng)
    images = [encode_tiff16(np.roll(field.dic, i * 7, axis=1)) for i in range(fields)]
    megabytes = sum(len(b) for b in images) / 1e6

    with tempfile.TemporaryDirectory() as tmp:
        database = DatabaseSettings(url=f"sqlite:///{Path(tmp) / 'bench.db'}")
        upgrade(database.url)
        engine = create_db_engine(database)
        with session_scope(engine) as session:
            _, key = register_scanner(session, name="bench-scanner")
        settings = Settings(database=database, store=store_settings, ingestion=IngestionSettings())
        engine.dispose()
        port = _free_port()
        with (
            _serve(settings, port),
            httpx.Client(
                base_url=f"http://127.0.0.1:{port}", timeout=120, headers={"X-API-Key": key}
            ) as client,
        ):
            slide = client.post(
                "/v1/slides", json={"external_id": f"bench-{seed}", "patient_pseudonym": "b"}
            ).json()["id"]

            def raw(index: int, data: bytes) -> None:
                _accepted(
                    client.put(
                        f"/v1/slides/{slide}/fields/{index}/DIC",
                        content=data,
                        headers={
                            "Content-Type": "image/tiff",
                            "X-Content-SHA256": hashlib.sha256(data).hexdigest(),
                        },
                    )
                )

            def form(index: int, data: bytes) -> None:
                _accepted(
                    client.post(
                        f"/v1/slides/{slide}/fields",
                        files={"file": ("f.tif", data, "image/tiff")},
                        data={"modality": "DIC", "index": str(index)},
                    )
                )

            def plain(index: int, data: bytes) -> None:
                store.put(
                    f"bench/plain/{seed}/{index:04d}.tif",
                    io.BytesIO(data),
                    length=len(data),
                    content_type="image/tiff",
                )

            raw(2 * fields, images[0])  # the untimed first upload of each route
            form(2 * fields + 1, images[0])
            raw_s, plain_s = _taking_turns(raw, plain, images, on_step)
            form_s = sum(_timed(form, fields + i, data, on_step) for i, data in enumerate(images))
    # what the bench wrote goes again: a store keeps nothing of it
    stored = list(store.list(f"{settings.ingestion.raw_prefix}/{slide}/"))
    for key in [*stored, *(f"bench/plain/{seed}/{index:04d}.tif" for index in range(fields))]:
        store.delete(key)

    raw_mbps, form_mbps, plain_mbps = (megabytes / t for t in (raw_s, form_s, plain_s))
    return {
        "fields": fields,
        "megabytes": round(megabytes, 2),
        "api_mb_per_s": round(raw_mbps, 2),
        "form_mb_per_s": round(form_mbps, 2),
        "minio_put_mb_per_s": round(plain_mbps, 2),
        "ratio": round(raw_mbps / plain_mbps, 3),
        "form_ratio": round(form_mbps / plain_mbps, 3),
        "stored": {  # the raw route keeps the bytes as received, the form route re-encodes
            "as_received": sum(key.endswith(RECEIVED_SUFFIX) for key in stored),
            "canonical": sum(not key.endswith(RECEIVED_SUFFIX) for key in stored),
        },
        "s3_endpoint": store_settings.endpoint,
    }


Upload = Callable[[int, bytes], None]


def _accepted(response: httpx.Response) -> None:
    if response.status_code != 201:
        raise RuntimeError(f"upload refused: {response.status_code} {response.text}")


def _timed(send: Upload, index: int, data: bytes, on_step: Progress | None) -> float:
    """Seconds that ``send(index, data)`` takes."""
    started = time.perf_counter()
    send(index, data)
    spent = time.perf_counter() - started
    if on_step:
        on_step()
    return spent


def _taking_turns(
    first: Upload, second: Upload, images: list[bytes], on_step: Progress | None
) -> tuple[float, float]:
    """Seconds to send every image by ``first`` and by ``second``, image by image in turn."""
    spent = [0.0, 0.0]
    for index, data in enumerate(images):
        spent[0] += _timed(first, index, data, on_step)
        spent[1] += _timed(second, index, data, on_step)
    return spent[0], spent[1]
