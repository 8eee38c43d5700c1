"""Hostile and broken input against the real services: the ingestion and results APIs as
their own processes, on Postgres and the S3 server.

Every case checks the answer, that nothing was stored (no field row, no object, no outbox
event), that the service still answers, and — for the size and bomb cases — that the
service's peak resident memory (``VmHWM``) grew by less than ``MEMORY_BOUND``.
"""

from __future__ import annotations

import io
import json
import os
import select
import socket
import struct
import subprocess
import sys
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import tifffile
from sqlalchemy import Engine, text

from stainless.core.config import DatabaseSettings, StoreBackend, StoreSettings
from stainless.core.db.engine import create_db_engine
from stainless.core.db.migrate import upgrade
from stainless.core.storage import create_store
from stainless.core.storage.base import ObjectStore

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

BIN = Path(sys.executable).parent
MiB = 2**20
MEMORY_BOUND = 64 * MiB
"""Most a service's peak resident memory may grow while it refuses one hostile request."""


@dataclass
class Service:
    process: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def peak_rss(self) -> int:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        (line,) = [row for row in status.splitlines() if row.startswith("VmHWM:")]
        return int(line.split()[1]) * 1024

    def alive(self) -> bool:
        return httpx.get(f"{self.url}/health/live", timeout=5).status_code == 200


@dataclass
class Stack:
    ingestion: Service
    results: Service
    engine: Engine
    store: ObjectStore
    scanner_key: str
    results_key: str

    def stored(self) -> tuple[int, int, int]:
        """Field rows, outbox events and raw objects."""
        with self.engine.connect() as connection:
            fields = connection.execute(text("SELECT count(*) FROM field")).scalar_one()
            events = connection.execute(text("SELECT count(*) FROM outboxevent")).scalar_one()
        return int(fields), int(events), len(list(self.store.list("raw/")))


def _start(name: str, env: dict[str, str], port: int, logs: Path) -> Service:
    log = (logs / f"{name}.log").open("wb")
    process = subprocess.Popen([str(BIN / f"stainless-{name}")], env=env, stdout=log, stderr=log)
    service = Service(process, port)
    deadline = time.monotonic() + 60
    while True:
        try:
            if service.alive():
                return service
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            raise AssertionError((logs / f"{name}.log").read_text()[-2000:])
        time.sleep(0.3)


@pytest.fixture(scope="module")
def stack(
    new_postgres_database: Callable[[], str],
    s3_endpoint: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    from servers import free_port

    url = new_postgres_database()
    upgrade(url)
    bucket = f"hostile-{uuid.uuid4().hex[:8]}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("STAINLESS_")},
        "STAINLESS_DATABASE__URL": url,
        "STAINLESS_STORE__BACKEND": "s3",
        "STAINLESS_STORE__ENDPOINT": s3_endpoint,
        "STAINLESS_STORE__BUCKET": bucket,
        "STAINLESS_INGESTION__MAX_UPLOAD_BYTES": str(32 * MiB),
        "STAINLESS_LOG__FORMAT": "console",
    }
    key, results_key = (
        subprocess.run(
            [str(BIN / "stainless"), *command],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        for command in (("scanner", "add", "hostile"), ("keys", "create", "ada", "--role", "admin"))
    )
    ports = {"ingestion": free_port(), "results": free_port()}
    env["STAINLESS_INGESTION__HTTP_PORT"] = str(ports["ingestion"])
    env["STAINLESS_RESULTS__HTTP_PORT"] = str(ports["results"])
    env["STAINLESS_INGESTION__METRICS_PORT"] = str(free_port())
    env["STAINLESS_RESULTS__METRICS_PORT"] = str(free_port())
    logs = tmp_path_factory.mktemp("hostile-logs")
    services = {name: _start(name, env, port, logs) for name, port in ports.items()}
    store = create_store(
        StoreSettings(backend=StoreBackend.S3, endpoint=s3_endpoint, bucket=bucket)
    )
    try:
        yield Stack(
            services["ingestion"],
            services["results"],
            create_db_engine(DatabaseSettings(url=url)),
            store,
            key,
            results_key,
        )
    finally:
        for service in services.values():
            service.process.terminate()
            service.process.wait(timeout=30)


def _raw(port: int, head: str, body: Iterator[bytes]) -> int:
    """Send a request's head, then its body while the server has not answered; the status.

    A server that answers before it has read the body (a refusal) is not waited for.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        connection.sendall(head.encode())
        try:
            for chunk in body:
                if select.select([connection], [], [], 0)[0]:
                    break  # the answer is there: stop sending
                connection.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = b""
        while b"\r\n" not in answer:
            received = connection.recv(4096)
            if not received:
                break
            answer += received
    return int(answer.split(b" ", 2)[1])


def _body(total: int, chunked: bool) -> Iterator[bytes]:
    block = b"x" * MiB
    for _ in range(total // MiB):
        yield f"{len(block):x}\r\n".encode() + block + b"\r\n" if chunked else block
    if chunked:
        yield b"0\r\n\r\n"


@pytest.mark.parametrize("chunked", [False, True], ids=["declared length", "chunked"])
@pytest.mark.parametrize("service", ["ingestion", "results"])
def test_a_huge_body_without_a_key_costs_nothing(stack: Stack, service: str, chunked: bool) -> None:
    target = getattr(stack, service)
    path = "/v1/slides" if service == "ingestion" else "/v1/training-jobs"
    size = 300 * MiB
    length = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {size}"
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{length}\r\n\r\n"
    before, stored = target.peak_rss(), stack.stored()
    assert _raw(target.port, head, _body(size, chunked)) == 401
    assert target.peak_rss() - before < MEMORY_BOUND
    assert stack.stored() == stored and target.alive()


@pytest.fixture
def slide(stack: Stack) -> str:
    answer = httpx.post(
        f"{stack.ingestion.url}/v1/slides",
        json={"external_id": f"H-{uuid.uuid4().hex[:8]}", "patient_pseudonym": "P"},
        headers={"X-API-Key": stack.scanner_key},
    )
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


def _tiff(pixels: np.ndarray, **options: object) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, pixels, **options)  # type: ignore[arg-type]
    return buffer.getvalue()


def _strip_bomb(inflated: int) -> bytes:
    """A 256x256 deflate TIFF whose one strip inflates to ``inflated`` bytes."""
    data = bytearray(_tiff(np.zeros((256, 256), np.uint16), compression="zlib"))
    with tifffile.TiffFile(io.BytesIO(bytes(data))) as tif:
        tags = tif.pages.first.tags
        offset_at, count_at = tags["StripOffsets"].valueoffset, tags["StripByteCounts"].valueoffset
    compressor, bomb = zlib.compressobj(9), bytearray()
    for _ in range(inflated // MiB):
        bomb += compressor.compress(b"\x00" * MiB)
    bomb += compressor.flush()
    struct.pack_into("<I", data, offset_at, len(data))
    struct.pack_into("<I", data, count_at, len(bomb))
    return bytes(data + bomb)


def _png_bomb(inflated: int) -> bytes:
    """A 64x64 grey PNG whose IDAT stream inflates to ``inflated`` bytes."""
    compressor, stream = zlib.compressobj(9), bytearray()
    for _ in range(inflated // MiB):
        stream += compressor.compress(b"\x00" * MiB)
    stream += compressor.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    ihdr = struct.pack(">IIBBBBB", 64, 64, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", bytes(stream))


def _label_page() -> bytes:
    buffer = io.BytesIO()
    with tifffile.TiffWriter(buffer) as writer:
        writer.write(np.full((256, 256), 900, np.uint16))
        writer.write(np.full((64, 64, 3), 200, np.uint8), description="Patient: Jane Doe")
    return buffer.getvalue()


BAD_IMAGES = [
    ("deflate strip bomb", lambda: _strip_bomb(300 * MiB), "DIC", 422),
    ("PNG stream bomb", lambda: _png_bomb(1024 * MiB), "DIC", None),  # refused or cut
    (
        "planar RGB",
        lambda: _tiff(np.zeros((3, 64, 64), np.uint8), photometric="rgb", planarconfig="separate"),
        "BF",
        422,
    ),
    (
        "image depth",
        lambda: _tiff(np.zeros((4, 64, 64), np.uint8), photometric="minisblack", volumetric=True),
        "DIC",
        422,
    ),
]


@pytest.mark.parametrize(
    ("name", "make", "modality", "status"), BAD_IMAGES, ids=[b[0] for b in BAD_IMAGES]
)
def test_bombs_and_odd_shapes_stay_out(
    stack: Stack,
    slide: str,
    name: str,
    make: Callable[[], bytes],
    modality: str,
    status: int | None,
) -> None:
    data = make()
    before, stored = stack.ingestion.peak_rss(), stack.stored()
    answer = httpx.post(
        f"{stack.ingestion.url}/v1/slides/{slide}/fields",
        files={"file": ("f.tif", data, "application/octet-stream")},
        data={"modality": modality, "index": "0"},
        headers={"X-API-Key": stack.scanner_key},
        timeout=120,
    )
    assert stack.ingestion.peak_rss() - before < MEMORY_BOUND, name
    assert stack.ingestion.alive()
    if status is None and answer.status_code == 201:  # what is stored is 64x64 pixels
        (key,) = [k for k in stack.store.list("raw/") if slide in k]
        assert len(stack.store.get(key)) < 64 * 1024
        return
    assert answer.status_code == (status or 422), answer.text
    assert stack.stored() == stored


def test_extra_pages_and_their_text_are_not_stored(stack: Stack, slide: str) -> None:
    answer = httpx.post(
        f"{stack.ingestion.url}/v1/slides/{slide}/fields",
        files={"file": ("f.tif", _label_page(), "image/tiff")},
        data={"modality": "DIC", "index": "0"},
        headers={"X-API-Key": stack.scanner_key},
    )
    assert answer.status_code == 201, answer.text
    stored = stack.store.get(answer.json()["object_key"])
    assert b"Patient" not in stored
    with tifffile.TiffFile(io.BytesIO(stored)) as tif:
        assert len(tif.pages) == 1


def test_many_extra_parts_beside_a_valid_upload_are_refused(stack: Stack, slide: str) -> None:
    files = [("file", ("f.tif", _tiff(np.ones((64, 64), np.uint16)), "image/tiff"))]
    files += [(f"extra{i}", ("x", b"\x00" * MiB, "image/tiff")) for i in range(24)]
    stored = stack.stored()
    answer = httpx.post(
        f"{stack.ingestion.url}/v1/slides/{slide}/fields",
        files=files,
        data={"modality": "DIC", "index": "0"},
        headers={"X-API-Key": stack.scanner_key},
    )
    assert answer.status_code == 413 and stack.stored() == stored


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e309"])
def test_non_finite_positions_write_nothing(stack: Stack, slide: str, value: str) -> None:
    stored = stack.stored()
    answer = httpx.post(
        f"{stack.ingestion.url}/v1/slides/{slide}/fields",
        files={"file": ("f.tif", _tiff(np.ones((64, 64), np.uint16)), "image/tiff")},
        data={"modality": "DIC", "index": "0", "stage_x_um": value},
        headers={"X-API-Key": stack.scanner_key},
    )
    assert answer.status_code == 422 and stack.stored() == stored
    status = httpx.get(
        f"{stack.ingestion.url}/v1/slides/{slide}", headers={"X-API-Key": stack.scanner_key}
    )
    assert status.status_code == 200  # the slide stays readable


def test_nan_acquisition_and_nul_ids_are_refused(stack: Stack) -> None:
    headers = {"X-API-Key": stack.scanner_key, "Content-Type": "application/json"}
    body = '{"external_id": "N-1", "patient_pseudonym": "P", "acquisition": {"gain": NaN}}'
    answer = httpx.post(f"{stack.ingestion.url}/v1/slides", content=body, headers=headers)
    assert answer.status_code == 422
    for service, path in (
        (stack.ingestion, "/v1/slides/a%00b"),
        (stack.results, "/v1/slides/a%00b"),
    ):
        key = stack.scanner_key if service is stack.ingestion else stack.results_key
        refused = httpx.get(f"{service.url}{path}", headers={"X-API-Key": key})
        assert refused.status_code == 422, refused.text


def test_the_results_api_refuses_oversized_and_unbounded_requests(stack: Stack) -> None:
    headers = {"X-API-Key": stack.results_key}
    huge_class = {"action": "reclassify", "new_class": "X" * (10 * MiB)}
    cell = "00000000-0000-0000-0000-000000000000"
    answer = httpx.post(
        f"{stack.results.url}/v1/cells/{cell}/reviews", json=huge_class, headers=headers
    )
    assert answer.status_code == 413 and len(answer.content) < 1024  # never echoed
    for body in (
        {"model": "mtmd", "dataset": "d.json", "workers": 100_000},
        {"model": "mtmd", "dataset": "a b"},
    ):
        refused = httpx.post(f"{stack.results.url}/v1/training-jobs", json=body, headers=headers)
        assert refused.status_code == 422, refused.text
    page = httpx.get(f"{stack.results.url}/")
    for header in ("Content-Security-Policy", "X-Content-Type-Options", "Cache-Control"):
        assert header in page.headers
    assert json.loads(httpx.get(f"{stack.results.url}/health/ready").text) == {"status": "ready"}
    assert stack.results.alive()
