"""``stainless store policies``: each workload's object-store policy from the settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stainless.cli.main import app


def test_prints_every_workloads_policy_for_the_settings_bucket(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STAINLESS_STORE__BUCKET", "lab-images")
    result = CliRunner().invoke(app, ["store", "policies"])
    assert result.exit_code == 0, result.output
    documents = json.loads(result.stdout)
    assert "triton" in documents and "ingestion" in documents
    resources = {r for s in documents["triton"]["Statement"] for r in s["Resource"]}
    assert resources == {"arn:aws:s3:::lab-images", "arn:aws:s3:::lab-images/models/*"}


def test_writes_one_file_per_chosen_workload(tmp_path: Path) -> None:
    args = ["store", "policies", "--workload", "results", "--out", str(tmp_path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_an_unknown_workload_is_refused() -> None:
    result = CliRunner().invoke(app, ["store", "policies", "--workload", "scanner"])
    assert result.exit_code == 2
    assert "no workload scanner" in result.output
