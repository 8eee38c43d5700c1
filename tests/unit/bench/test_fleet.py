"""The fleet benchmark's own parts: the stack it finds, what it reads of processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stainless.bench.fleet import (
    FleetError,
    Stack,
    _by_service,
    _percentile,
    _Sampler,
    _Samples,
    _tree,
    _usage,
)
from stainless.core.config import BusSettings, DatabaseSettings


def test_no_stack_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FleetError, match="make up"):
        Stack.from_state(tmp_path)


def test_a_stack_is_read_from_its_state_with_its_live_services(tmp_path: Path) -> None:
    (tmp_path / "stack.json").write_text(
        json.dumps(
            {
                "env": {
                    "STAINLESS_DATABASE__URL": "postgresql+psycopg://u@127.0.0.1:5432/s",
                    "STAINLESS_BUS__BOOTSTRAP_SERVERS": "127.0.0.1:9092",
                },
                "urls": {"ingestion": "http://127.0.0.1:8080", "results": "http://x:8083"},
                "results_key": "rk_1",
                "replicas": 2,
            }
        )
    )
    (tmp_path / "relay.pid").write_text(f"{os.getpid()}\n")
    (tmp_path / "worker.pid").write_text("999999999\n")  # gone
    (tmp_path / "servers").mkdir()
    (tmp_path / "servers" / "kafka.pid").write_text(f"{os.getppid()}\n")
    stack = Stack.from_state(tmp_path, tmp_path / "servers")
    assert stack.pids == {"relay": os.getpid(), "server:kafka": os.getppid()}
    assert stack.bus.bootstrap_servers == "127.0.0.1:9092"
    assert stack.results_key == "rk_1"
    assert stack.replicas == 2


def test_the_replicas_of_a_stage_are_added_together() -> None:
    samples = _Samples(
        times=[0.0, 10.0],
        cpu_s={"registration": [1.0, 4.0], "registration-2": [0.0, 2.0], "server:s3": [0.0, 1.0]},
        rss_mb={"registration": [100.0, 120.0], "registration-2": [90.0, 80.0], "server:s3": [5.0]},
    )
    services = _by_service(samples)
    assert services["registration"] == {
        "processes": 2,
        "cpu_s": 5.0,
        "cpu_share": 0.5,
        "peak_rss_mb": 210.0,
    }
    assert services["server:s3"]["processes"] == 1
    assert services["server:s3"]["cpu_share"] == 0.1


def test_a_service_counts_its_children() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "sum(range(10**7)); import time; time.sleep(30)"]
    )
    try:
        for _ in range(100):
            if child.pid in _tree(os.getpid()) and _usage(child.pid)[0] > 0:
                break
            time.sleep(0.05)
        assert child.pid in _tree(os.getpid())
        mine, with_child = _usage(child.pid), _usage(os.getpid())
        assert mine[0] > 0 and mine[1] > 1
        assert with_child[0] >= mine[0] and with_child[1] > mine[1]
    finally:
        child.kill()
        child.wait()


def test_percentiles_take_the_nearest_rank() -> None:
    values = [float(v) for v in range(1, 21)]
    assert _percentile(values, 0.5) == 11.0
    assert _percentile(values, 0.95) == 19.0
    assert _percentile([3.0], 0.95) == 3.0


def test_a_sampler_that_fails_fails_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    def unreachable(self: _Sampler) -> None:
        raise ConnectionError("no broker at 127.0.0.1:1")

    monkeypatch.setattr(_Sampler, "_run", unreachable)
    stack = Stack(
        ingestion_url="http://127.0.0.1:1",
        results_url="http://127.0.0.1:1",
        results_key="rk",
        database=DatabaseSettings(url="sqlite://"),
        bus=BusSettings(bootstrap_servers="127.0.0.1:1"),
        pids={"me": os.getpid()},
    )
    sampler = _Sampler(stack, interval_s=0.1)
    sampler.start()
    with pytest.raises(FleetError, match=r"sampling the stack failed.*no broker"):
        sampler.stop()
