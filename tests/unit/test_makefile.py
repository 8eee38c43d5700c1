"""``make help`` lists every target the Makefile declares phony."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_help_lists_every_phony_target() -> None:
    makefile = (ROOT / "Makefile").read_text()
    phony = {
        target
        for line in re.findall(r"^\.PHONY:(.*)$", makefile, flags=re.MULTILINE)
        for target in line.split()
    }
    shown = subprocess.run(
        ["make", "--no-print-directory", "help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    listed = {line.split()[0] for line in shown.splitlines() if line.strip()}
    assert phony and phony <= listed, f"not in make help: {sorted(phony - listed)}"
