"""``stainless bench triton`` against the real Triton server: both phases, the batches the
server formed from its statistics, and a clear error for a model or a server it cannot use."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import servers as infra
from typer.testing import CliRunner

from stainless.cli.main import app

pytestmark = pytest.mark.integration


def _bench(monkeypatch: pytest.MonkeyPatch, repo: Path, *args: str) -> Any:
    monkeypatch.setenv("STAINLESS_INFERENCE__MODEL_REPOSITORY", str(repo))
    return CliRunner().invoke(app, ["bench", "triton", *args])


def test_the_batches_formed_count_every_cell(
    triton_server: Any, exported_python_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ["--json", "--url", triton_server.grpc_url, "--model", "stain", "--cells", "12"]
    done = _bench(monkeypatch, exported_python_repo, *args, "--clients", "4")
    assert done.exit_code == 0, done.output
    result = json.loads(done.output.strip().splitlines()[-1])
    assert (result["model"], result["version"], result["cells"]) == ("stain", "1", 12)
    one, many = result["one_by_one"], result["concurrent"]
    assert one["batches_formed"] == {"1": 12} and one["mean_batch"] == 1.0
    assert sum(int(size) * n for size, n in many["batches_formed"].items()) == 12
    assert many["clients"] == 4 and max(map(int, many["batches_formed"])) <= 4
    for phase in (one, many):
        assert 0 < phase["latency_p50_ms"] <= phase["latency_p95_ms"]
    assert result["ratio"] == pytest.approx(many["cells_per_s"] / one["cells_per_s"], rel=0.01)


def test_a_model_or_a_server_it_cannot_use_is_named(
    triton_server: Any, exported_python_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ["--url", triton_server.grpc_url, "--model", "wbc_detector_dic"]
    done = _bench(monkeypatch, exported_python_repo, *args)
    assert done.exit_code == 2 and "no fixed-size INPUT__0" in done.output
    done = _bench(monkeypatch, exported_python_repo, "--url", f"127.0.0.1:{infra.free_port()}")
    assert done.exit_code == 2 and "cannot be reached" in done.output
    done = _bench(monkeypatch, exported_python_repo, "--url", "http://127.0.0.1:8001")
    assert done.exit_code == 2 and "without a scheme" in done.output
