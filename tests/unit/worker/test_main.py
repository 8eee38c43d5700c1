"""The worker refuses to start without the field task's learned detector, and imports
without the ML stack when its detectors are classical."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BLOCK_ML_STACK = (
    "import importlib.abc, sys\n"
    "class Block(importlib.abc.MetaPathFinder):\n"
    "    def find_spec(self, name, path, target=None):\n"
    "        if name.split('.')[0] in ('torch', 'torchvision', 'lpips', 'ray'):\n"
    "            raise ImportError(name)\n"
    "sys.meta_path.insert(0, Block())\n"
)


def _import_worker(prelude: str = "", **settings: str) -> subprocess.CompletedProcess[str]:
    """``import stainless_worker.main`` in a fresh interpreter with only these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STAINLESS_")} | settings
    return subprocess.run(
        [sys.executable, "-c", prelude + "import stainless_worker.main\n"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_selected_learned_detector_that_is_missing_stops_the_worker(tmp_path: Path) -> None:
    done = _import_worker(
        STAINLESS_REGISTRATION__DETECTOR__BRIGHTFIELD="learned",
        STAINLESS_REGISTRATION__DETECTOR__MODEL_REPOSITORY=str(tmp_path / "models"),
    )
    assert done.returncode != 0
    assert "stainless-worker cannot start" in done.stderr
    assert "stainless export-detector" in done.stderr


def test_the_worker_with_classical_detectors_imports_without_the_ml_stack() -> None:
    done = _import_worker(BLOCK_ML_STACK)
    assert done.returncode == 0, done.stderr
