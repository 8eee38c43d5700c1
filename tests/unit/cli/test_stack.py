"""A platform command run where a stack is up takes its settings, unless told otherwise."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stainless.cli.stack import STACK_FILE, announce_running_stack, use_running_stack

SETTINGS = {"STAINLESS_DATABASE__URL": "postgresql+psycopg://postgres@127.0.0.1:5432/stainless"}


def _stack(root: Path, pid: int) -> Path:
    path = root / STACK_FILE
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"env": {}, "cli_env": SETTINGS}))
    (path.parent / "results.pid").write_text(f"{pid} stainless-results\n")
    return path


def test_the_settings_of_a_running_stack_are_taken_only_when_none_are_set(tmp_path: Path) -> None:
    path = _stack(tmp_path, os.getpid())
    environ: dict[str, str] = {"PATH": "/bin"}
    assert use_running_stack(environ, path) == path and environ == {"PATH": "/bin", **SETTINGS}
    chosen = {"STAINLESS_STORE__ROOT": "elsewhere"}
    assert use_running_stack(chosen, path) is None and chosen == {
        "STAINLESS_STORE__ROOT": "elsewhere"
    }


def test_a_stack_that_is_down_is_not_used(tmp_path: Path) -> None:
    ended = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    path = _stack(tmp_path, int(ended.stdout))
    environ: dict[str, str] = {}
    assert use_running_stack(environ, path) is None and environ == {}


def test_only_platform_commands_take_it_and_say_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _stack(tmp_path, os.getpid())
    monkeypatch.chdir(tmp_path)
    for name in [k for k in os.environ if k.startswith("STAINLESS_")]:
        monkeypatch.delenv(name)
    announce_running_stack(["demo", "--out", "x"])
    assert "STAINLESS_DATABASE__URL" not in os.environ
    try:
        announce_running_stack(["--debug", "scanner", "add", "microscope-07"])
        taken = os.environ["STAINLESS_DATABASE__URL"]
    finally:
        os.environ.pop("STAINLESS_DATABASE__URL", None)
    assert taken == SETTINGS["STAINLESS_DATABASE__URL"]
    said = " ".join(capsys.readouterr().err.split())
    assert said == (
        "using the settings of the stack running here (out/stack/stack.json); set a "
        "STAINLESS_* variable to use others"
    )
