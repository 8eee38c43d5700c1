"""A phantom slide uploaded over HTTP ends as cropped cells, with every service its own process.

Real Postgres, S3 server, Kafka broker and Redis; the ingestion API, the outbox
relay, the registration consumer and a Celery worker run as separate processes.
The same upload retried and the same event redelivered change nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from sqlmodel import Session, select

from stainless.core.config import (
    BusBackend,
    BusSettings,
    DatabaseSettings,
    StoreBackend,
    StoreSettings,
)
from stainless.core.db.engine import create_db_engine
from stainless.core.db.models import Cell, Registration, RegistrationStatus
from stainless.core.events import CellsCropped, Envelope, create_bus
from stainless.core.storage.local import LocalObjectStore
from stainless.core.storage.s3 import S3ObjectStore
from stainless.datasets.phantom import write_slide
from stainless.imaging.phantom_set import phantom_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]
BIN = Path(sys.executable).parent


@pytest.fixture
def system(
    new_postgres_database: Callable[[], str],
    s3_endpoint: str,
    kafka_bootstrap: str,
    redis_url: str,
    free_port: Callable[[], int],
    tmp_path: Path,
) -> Iterator[dict[str, str]]:
    run = uuid.uuid4().hex[:8]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("STAINLESS_")},
        "STAINLESS_DATABASE__URL": new_postgres_database(),
        "STAINLESS_STORE__BACKEND": "s3",
        "STAINLESS_STORE__ENDPOINT": s3_endpoint,
        "STAINLESS_STORE__BUCKET": f"pipeline-{run}",
        "STAINLESS_BUS__BACKEND": "kafka",
        "STAINLESS_BUS__BOOTSTRAP_SERVERS": kafka_bootstrap,
        "STAINLESS_BUS__TOPIC_PREFIX": f"p{run}.",
        "STAINLESS_BUS__SESSION_TIMEOUT_MS": "6000",
        "STAINLESS_BUS__HEARTBEAT_INTERVAL_MS": "1000",
        "STAINLESS_TASKS__EAGER": "false",
        "STAINLESS_TASKS__BROKER_URL": f"{redis_url}/11",
        "STAINLESS_TASKS__RESULT_BACKEND": f"{redis_url}/12",
        "STAINLESS_INGESTION__HTTP_PORT": str(free_port()),
        "STAINLESS_INGESTION__METRICS_PORT": str(free_port()),
        "STAINLESS_RELAY__HTTP_PORT": str(free_port()),
        "STAINLESS_REGISTRATION__HTTP_PORT": str(free_port()),
        "STAINLESS_WORKER__METRICS_PORT": str(free_port()),
        "STAINLESS_RELAY__POLL_INTERVAL_S": "0.1",
        "STAINLESS_LOG__FORMAT": "console",
    }
    subprocess.run([BIN / "stainless", "db", "upgrade"], env=env, check=True)
    key = subprocess.run(
        [BIN / "stainless", "scanner", "add", "pipeline-scanner"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    commands = {
        "ingestion": [BIN / "stainless-ingestion"],
        "relay": [BIN / "stainless-relay"],
        "registration": [BIN / "stainless-registration"],
        "worker": [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "stainless_worker.main",
            "worker",
            "--pool=solo",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ],
    }
    processes = {}
    for name, command in commands.items():
        log = (tmp_path / f"{name}.log").open("wb")
        processes[name] = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield {**env, "api_key": key, "logs": str(tmp_path)}
    finally:
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            process.wait(timeout=30)


def _wait(check: Callable[[], bool], what: str, logs: str, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            tails = {
                p.name: p.read_text(errors="replace")[-1500:] for p in Path(logs).glob("*.log")
            }
            raise AssertionError(f"timed out waiting for {what}; logs: {tails}")
        time.sleep(0.5)


def test_uploaded_slide_becomes_cropped_cells_exactly_once(
    system: dict[str, str], tmp_path: Path
) -> None:
    phantom = LocalObjectStore(tmp_path / "phantom")
    entry = write_slide(
        phantom,
        prefix="",
        slide_index=0,
        fields=2,
        seed=11,
        config=phantom_config(width=1024, height=768),
    )
    url = f"http://127.0.0.1:{system['STAINLESS_INGESTION__HTTP_PORT']}"
    client = httpx.Client(base_url=url, headers={"X-API-Key": system["api_key"]}, timeout=60)
    _wait(lambda: _answers(client), "the ingestion API", system["logs"], timeout_s=60)

    slide = client.post(
        "/v1/slides", json={"external_id": "PIPE-1", "patient_pseudonym": "P-1"}
    ).json()["id"]
    answers = []
    for field in entry["fields"]:
        for modality, key in (("DIC", field["dic"]), ("BF", field["bf"])):
            upload = {
                "files": {"file": (key, phantom.get(key), "application/octet-stream")},
                "data": {"modality": modality, "index": str(field["index"])},
                "headers": {"Idempotency-Key": f"f{field['index']}-{modality}"},
            }
            answers.append(client.post(f"/v1/slides/{slide}/fields", **upload))
            if modality == "BF" and field["index"] == 0:  # a scanner's retry
                retry = client.post(f"/v1/slides/{slide}/fields", **upload)
                assert retry.status_code == 201 and retry.json() == answers[-1].json()
    assert [a.status_code for a in answers] == [201] * 4, [a.text for a in answers]
    assert client.post(f"/v1/slides/{slide}/complete").status_code == 200

    def registered() -> bool:
        status = client.get(f"/v1/slides/{slide}").json()
        return bool(status["registrations"] == 2)

    _wait(registered, "both fields to be registered and cropped", system["logs"])
    engine = create_db_engine(DatabaseSettings(url=system["STAINLESS_DATABASE__URL"]))
    with Session(engine) as session:
        registrations = session.exec(select(Registration)).all()
        cells = session.exec(select(Cell).where(Cell.slide_id == slide)).all()
    assert {r.status for r in registrations} == {RegistrationStatus.ACCEPTED}
    truth = sum(len(f["cells"]) for f in entry["fields"])
    assert cells and abs(len(cells) - truth) <= 1, (len(cells), truth)

    store = S3ObjectStore.from_settings(
        StoreSettings(
            backend=StoreBackend.S3,
            endpoint=system["STAINLESS_STORE__ENDPOINT"],
            bucket=system["STAINLESS_STORE__BUCKET"],
        )
    )
    for cell in cells:
        for key in (cell.dic_crop_key, cell.bf_crop_key, cell.review_crop_key):
            assert key is not None and store.exists(key)
    raw = list(store.list("raw/"))
    assert len(raw) == 4  # the retried upload stored nothing

    bus = create_bus(
        BusSettings(
            backend=BusBackend.KAFKA,
            bootstrap_servers=system["STAINLESS_BUS__BOOTSTRAP_SERVERS"],
            topic_prefix=system["STAINLESS_BUS__TOPIC_PREFIX"],
            session_timeout_ms=6000,
            heartbeat_interval_ms=1000,
        )
    )
    cropped = _read_all(bus, "cells.cropped", f"check-{uuid.uuid4().hex[:6]}", expect=2)
    assert sorted(c for e in cropped for c in e.parsed(CellsCropped).cell_ids) == sorted(
        c.id for c in cells
    )

    # Redeliver every fields.ingested event: nothing may change.
    ingested = _read_all(bus, "fields.ingested", f"replay-{uuid.uuid4().hex[:6]}", expect=4)
    for envelope in ingested:
        bus.publish(envelope)
    time.sleep(8)
    with Session(engine) as session:
        assert len(session.exec(select(Registration)).all()) == 2
        assert len(session.exec(select(Cell).where(Cell.slide_id == slide)).all()) == len(cells)
    assert len(_read_all(bus, "cells.cropped", f"recheck-{uuid.uuid4().hex[:6]}", expect=2)) == 2
    bus.close()


def _answers(client: httpx.Client) -> bool:
    try:
        return client.get("/health/ready").status_code == 200
    except httpx.HTTPError:
        return False


def _read_all(bus: object, topic: str, group: str, *, expect: int) -> list[Envelope]:
    received: list[Envelope] = []
    consumer = bus.consumer(group=group, topics=[topic], handler=received.append)  # type: ignore[attr-defined]
    try:
        deadline = time.monotonic() + 60
        while len(received) < expect and time.monotonic() < deadline:
            consumer.poll_once(timeout_s=0.5)
        for _ in range(4):  # anything beyond what is expected would show up here
            consumer.poll_once(timeout_s=0.5)
    finally:
        consumer.close()
    return received
