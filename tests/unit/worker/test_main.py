"""The worker refuses to start when the field task's learned detector is not exported."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_a_selected_learned_detector_that_is_missing_stops_the_worker(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STAINLESS_")}
    env |= {
        "STAINLESS_REGISTRATION__DETECTOR__BRIGHTFIELD": "learned",
        "STAINLESS_REGISTRATION__DETECTOR__MODEL_REPOSITORY": str(tmp_path / "models"),
    }
    done = subprocess.run(
        [sys.executable, "-c", "import stainless_worker.main"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode != 0
    assert "stainless-worker cannot start" in done.stderr
    assert "stainless export-detector" in done.stderr


def test_the_worker_with_classical_detectors_imports_without_the_ml_stack() -> None:
    script = (
        "import importlib.abc, sys\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'torchvision', 'lpips', 'ray'):\n"
        "            raise ImportError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import stainless_worker.main\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("STAINLESS_")}
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
