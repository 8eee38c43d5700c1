"""The registration and detection benchmarks, with tiny parameters, and their CLI."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from stainless.bench.detection import run_detection_bench
from stainless.bench.registration import is_number, run_registration_bench
from stainless.cli.main import app

REGISTRATION_KEYS = {
    "pairs",
    "median_err_px",
    "p95_err_px",
    "s_per_pair",
    "accepted",
    "baseline_median_err_px",
    "baseline_p95_err_px",
    "baseline_s_per_pair",
    "baseline_failures",
    "speedup",
    "representation",
}
DETECTION_KEYS = {"bf_precision", "bf_recall", "dic_precision", "dic_recall", "fields", "cells"}


def test_registration_bench_reports_every_key() -> None:
    result = run_registration_bench(2, 0, width=512, height=384)
    assert result.keys() >= REGISTRATION_KEYS
    assert result["pairs"] == 2
    assert isinstance(result["accepted"], int) and 0 <= result["accepted"] <= 2
    assert isinstance(result["baseline_failures"], int) and 0 <= result["baseline_failures"] <= 2
    assert isinstance(result["representation"], str) and result["representation"]
    for key in ("median_err_px", "p95_err_px", "s_per_pair", "baseline_s_per_pair", "speedup"):
        assert is_number(result[key]), key
    assert result["median_err_px"] <= result["p95_err_px"]
    for key in ("baseline_median_err_px", "baseline_p95_err_px"):
        assert result[key] is None or is_number(result[key])
    assert result["speedup"] == pytest.approx(result["baseline_s_per_pair"] / result["s_per_pair"])
    json.dumps(result)  # plain JSON types only


def test_registration_bench_without_baseline() -> None:
    result = run_registration_bench(1, 1, width=512, height=384, baseline=False)
    assert result["speedup"] is None and result["baseline_failures"] is None
    with pytest.raises(ValueError, match="pairs"):
        run_registration_bench(0)


def test_detection_bench_reports_every_key() -> None:
    ticks: list[int] = []
    result = run_detection_bench(2, 0, width=512, height=384, progress=lambda: ticks.append(1))
    assert result.keys() >= DETECTION_KEYS
    assert result["fields"] == 2 and len(ticks) == 2
    assert isinstance(result["cells"], int) and result["cells"] >= 0
    for key in ("bf_precision", "bf_recall", "dic_precision", "dic_recall"):
        assert is_number(result[key]) and 0.0 <= result[key] <= 1.0, key
    json.dumps(result)
    with pytest.raises(ValueError, match="fields"):
        run_detection_bench(0)


@pytest.mark.parametrize(
    ("command", "keys"),
    [
        (["bench", "registration", "--pairs", "1"], REGISTRATION_KEYS),
        (["bench", "detection", "--fields", "1"], DETECTION_KEYS),
    ],
)
def test_bench_cli_prints_json_last(command: list[str], keys: set[str]) -> None:
    done = CliRunner().invoke(app, [*command, "--json", "--width", "512", "--height", "384"])
    assert done.exit_code == 0, done.output
    last = done.stdout.strip().splitlines()[-1]
    assert keys <= json.loads(last).keys()


def test_bench_cli_table_and_bad_size() -> None:
    runner = CliRunner()
    done = runner.invoke(
        app, ["bench", "detection", "--fields", "1", "--width", "512", "--height", "384"]
    )
    assert done.exit_code == 0, done.output
    assert "dic_recall" in done.stdout
    bad = runner.invoke(app, ["bench", "detection", "--fields", "1", "--width", "100"])
    assert bad.exit_code == 2


@pytest.mark.slow
def test_pipeline_bench_prints_its_json() -> None:
    done = CliRunner().invoke(app, ["bench", "pipeline", "--json", "--fields", "2"])
    assert done.exit_code == 0, done.output
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["cells"] > 0 and result["model_version"] == "mtmd-tiny/1"
    for key in ("pipeline_cells_per_s", "inference_cells_per_s", "overhead_ratio", "peak_rss_mb"):
        assert result[key] > 0, key
    assert result["end_to_end_ratio"] == pytest.approx(
        result["pipeline_cells_per_s"] / result["inference_cells_per_s"]
    )
    assert set(result["seconds"]) == {"upload", "relay", "registration", "inference", "pipeline"}
    profile = result["stage_profile"]
    assert sum(profile["batch_sizes"]) == result["cells"]
    assert profile["seconds"]["infer"] > 0
    # the phases and the rest add up to the stage's seconds
    assert sum(profile["seconds"].values()) == pytest.approx(
        result["seconds"]["inference"], abs=0.01
    )
