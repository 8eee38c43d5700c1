"""``make lint`` keeps the layers: the contracts pass on the tree and a violation fails them.

A violation is tried on a copy of the package renamed ``stainless_copy`` (its imports and
the contracts of ``pyproject.toml`` renamed alike), so that the copy never mixes with the
installed ``stainless``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT = Path(sys.executable).parent / "lint-imports"
COPY = "stainless_copy"


def _lint(config: Path, cwd: Path, pythonpath: Path | None = None) -> str:
    env = {"PATH": "/usr/bin:/bin"} | ({"PYTHONPATH": str(pythonpath)} if pythonpath else {})
    found = subprocess.run(
        [str(LINT), "--no-cache", str(config)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return f"exit {found.returncode}\n{found.stdout}{found.stderr}"


def _renamed(value: Any) -> Any:
    if isinstance(value, list):
        return [_renamed(v) for v in value]
    if isinstance(value, str):
        return re.sub(r"^stainless(?=\.|$)", COPY, value)
    return value


def _copy_config(tmp_path: Path) -> Path:
    """The contracts of pyproject.toml, on the copy, as an ``.importlinter`` INI file."""
    settings = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    lines = ["[importlinter]", f"root_packages =\n    {COPY}", "include_external_packages = True"]
    for contract in settings["contracts"]:
        lines.append(f"\n[importlinter:contract:{contract['id']}]")
        for key, value in contract.items():
            if key == "id":
                continue
            value = _renamed(value)
            if isinstance(value, list):
                lines.append(f"{key} =" + "".join(f"\n    {v}" for v in value))
            else:
                lines.append(f"{key} = {value}")
    config = tmp_path / ".importlinter"
    config.write_text("\n".join(lines) + "\n")
    return config


def _copy_with(tmp_path: Path, module: str, line: str) -> Path:
    """The package copied as ``stainless_copy`` with ``line`` added to ``module``."""
    libs = tmp_path / "libs"
    shutil.copytree(ROOT / "libs" / "stainless", libs / COPY)
    for path in (libs / COPY).rglob("*.py"):
        path.write_text(re.sub(r"\bstainless(?=\.\w)", COPY, path.read_text()))
    target = libs / COPY / module
    target.write_text(target.read_text() + f"\n{line}\n")
    return libs


def test_the_tree_keeps_every_contract() -> None:
    found = _lint(ROOT / "pyproject.toml", ROOT)
    assert found.startswith("exit 0"), found
    assert "5 kept, 0 broken" in found


def test_the_unchanged_copy_keeps_them_too(tmp_path: Path) -> None:
    libs = _copy_with(tmp_path, "domain/cells.py", "")
    found = _lint(_copy_config(tmp_path), tmp_path, libs)
    assert found.startswith("exit 0") and "5 kept, 0 broken" in found, found


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("domain/cells.py", f"import {COPY}.core.db.models", "Layers point inward"),
        ("imaging/registration.py", "import torch", "import no torch"),
        (
            "stages/review/queries.py",
            f"import {COPY}.stages.inference.stage",
            "Stages meet only through event contracts",
        ),
        ("core/config.py", "import stainless_training", "imports no service"),
        ("core/db/models.py", f"import {COPY}.core.events.outbox", "No cycles"),
    ],
)
def test_a_deliberate_violation_fails_the_lint(
    tmp_path: Path, module: str, line: str, contract: str
) -> None:
    found = _lint(_copy_config(tmp_path), tmp_path, _copy_with(tmp_path, module, line))
    assert not found.startswith("exit 0"), found
    assert contract in found[found.index("Broken contracts") :], found
