"""The task-queue port on Redis: a real Celery worker process runs the phantom task."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from stainless.core.config import Settings, StoreSettings, TaskSettings, WorkerSettings
from stainless.core.storage.local import LocalObjectStore
from stainless.core.tasks import create_celery
from stainless.datasets.phantom import register_phantom_task

pytestmark = pytest.mark.integration


@pytest.fixture
def worker_settings(redis_url: str, tmp_path: Path, unused_port: int) -> Settings:
    return Settings(
        tasks=TaskSettings(
            eager=False, broker_url=f"{redis_url}/13", result_backend=f"{redis_url}/14"
        ),
        store=StoreSettings(root=tmp_path / "store"),
        worker=WorkerSettings(metrics_port=unused_port),
    )


@pytest.fixture
def worker(worker_settings: Settings, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "STAINLESS_TASKS__EAGER": "false",
        "STAINLESS_TASKS__BROKER_URL": worker_settings.tasks.broker_url,
        "STAINLESS_TASKS__RESULT_BACKEND": worker_settings.tasks.result_backend,
        "STAINLESS_STORE__ROOT": str(worker_settings.store.root),
        "STAINLESS_WORKER__METRICS_PORT": str(worker_settings.worker.metrics_port),
        "STAINLESS_LOG__FORMAT": "console",
    }
    create_celery(worker_settings.tasks).control.purge()
    log = (tmp_path / "worker.log").open("wb")
    process = subprocess.Popen(
        [
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
            "--loglevel=INFO",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    yield process
    process.terminate()
    process.wait(timeout=30)


def _get(url: str, timeout_s: float = 30.0) -> tuple[int, bytes]:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status, response.read()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_a_real_worker_renders_a_phantom_slide(
    worker: subprocess.Popen[bytes], worker_settings: Settings, tmp_path: Path
) -> None:
    task = register_phantom_task(create_celery(worker_settings.tasks), worker_settings.store)
    result = task.delay(prefix="raw/celery", slide_index=0, fields=2, seed=3, width=320, height=256)
    entry = result.get(timeout=180)
    assert worker.poll() is None, (tmp_path / "worker.log").read_text()
    store = LocalObjectStore(worker_settings.store.root)
    assert json.loads(store.get("raw/celery/slide_000/slide.json")) == entry
    assert [f["index"] for f in entry["fields"]] == [0, 1]
    for field in entry["fields"]:
        assert store.exists(field["dic"]) and store.exists(field["bf"])
        assert (field["width"], field["height"]) == (320, 256)

    port = worker_settings.worker.metrics_port
    assert _get(f"http://127.0.0.1:{port}/health/ready")[0] == 200
    status, body = _get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200 and b"python_info" in body


def test_bad_arguments_fail_the_task_with_the_reason(
    worker: subprocess.Popen[bytes], worker_settings: Settings
) -> None:
    task = register_phantom_task(create_celery(worker_settings.tasks), worker_settings.store)
    escaping = task.delay(prefix="../escape", slide_index=0, fields=1, seed=1)
    with pytest.raises(ValueError, match=r"object key '\.\./escape' has a '\.\.' segment"):
        escaping.get(timeout=120)
    tiny = task.delay(prefix="ok", slide_index=0, fields=1, seed=1, width=8)
    with pytest.raises(ValueError, match="invalid phantom configuration: width"):
        tiny.get(timeout=120)
    assert list(LocalObjectStore(worker_settings.store.root).list()) == []
