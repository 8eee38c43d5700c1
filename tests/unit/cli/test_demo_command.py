"""``stainless demo --serve`` serves the demo already in --out instead of running another."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stainless.cli import main
from stainless.cli.main import app


def test_serve_serves_the_existing_demo_without_running_it_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served: list[str] = []

    def refuse(*_: object) -> str:
        raise AssertionError("the demo ran again")

    monkeypatch.setattr(main, "_run_demo", refuse)
    monkeypatch.setattr(main, "_serve_demo", served.append)
    (tmp_path / "summary.json").write_text(json.dumps({"slide_id": "s-1"}))
    done = CliRunner().invoke(app, ["demo", "--out", str(tmp_path), "--serve"])
    assert done.exit_code == 0, done.output
    assert served == ["s-1"]
    assert "serving the demo in" in done.output


def test_serve_runs_the_demo_first_when_there_is_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served: list[str] = []

    def run(out: Path, *_: object) -> str:
        (out / "summary.json").write_text(
            json.dumps({"cell_count": 1, "needs_review": 0, "elapsed_s": 1, "detectors": "d"})
        )
        return "s-2"

    monkeypatch.setattr(main, "_run_demo", run)
    monkeypatch.setattr(main, "_serve_demo", served.append)
    done = CliRunner().invoke(app, ["demo", "--out", str(tmp_path), "--serve"])
    assert done.exit_code == 0, done.output
    assert served == ["s-2"]
