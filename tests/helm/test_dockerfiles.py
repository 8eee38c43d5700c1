"""The Dockerfiles, linted without a Docker engine: hadolint's rules that matter here, in Python.

Each service has ``services/<name>/Dockerfile`` and training ``training/Dockerfile``, all
built from the repository root (``make images``). Rule codes are hadolint's where one exists.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = sorted(p.parent.name for p in (ROOT / "services").glob("*/pyproject.toml"))
DOCKERFILES = {name: ROOT / "services" / name / "Dockerfile" for name in SERVICES}
DOCKERFILES["training"] = ROOT / "training" / "Dockerfile"
UID = 10001  # the chart's runAsUser (helm/stainless/templates/_helpers.tpl)


@dataclass(frozen=True)
class Instruction:
    keyword: str
    value: str
    stage: int


def _ports() -> dict[str, int]:
    spec = importlib.util.spec_from_file_location("stainless_stack", ROOT / "infra" / "stack.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return dict(module.PORTS)


def parse(path: Path) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped."""
    logical, pending = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, f"{path}: dangling continuation"
    out, stage = [], -1
    for line in logical:
        keyword, _, value = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        out.append(Instruction(keyword, value.strip(), stage))
    return out


def _args(instructions: list[Instruction]) -> dict[str, str]:
    found = {}
    for ins in instructions:
        if ins.keyword == "ARG" and ins.stage == -1 and "=" in ins.value:
            name, _, default = ins.value.partition("=")
            found[name] = default
    return found


def _final(instructions: list[Instruction]) -> list[Instruction]:
    last = max(i.stage for i in instructions)
    return [i for i in instructions if i.stage == last]


def _exec_form(value: str) -> list[str]:
    parsed = json.loads(value)
    assert isinstance(parsed, list) and all(isinstance(p, str) for p in parsed), value
    return parsed


@pytest.fixture(params=sorted(DOCKERFILES))
def dockerfile(request: pytest.FixtureRequest) -> tuple[str, list[Instruction]]:
    name: str = request.param
    return name, parse(DOCKERFILES[name])


def test_every_service_has_a_dockerfile() -> None:
    assert set(SERVICES) == {"ingestion", "registration", "relay", "worker", "inference", "results"}
    for path in DOCKERFILES.values():
        assert path.is_file(), path


def test_base_images_are_pinned_slim_python(dockerfile: tuple[str, list[Instruction]]) -> None:
    """DL3006/DL3007: a tag on every base, never latest; the Python the project targets."""
    name, instructions = dockerfile
    args = _args(instructions)
    stages = {}
    for ins in instructions:
        if ins.keyword != "FROM":
            continue
        parts = ins.value.split()
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], parts[0])
        assert ":" in image and not image.endswith(":latest"), f"{name}: {image}"
        assert re.match(r"^python:3\.11\.\d+-slim", image), f"{name}: {image}"
        assert len(parts) == 3 and parts[1].upper() == "AS", f"{name}: unnamed stage {ins.value}"
        stages[parts[2]] = ins.stage
    assert len(stages) >= 2, f"{name}: not multi-stage"
    for ins in instructions:
        if ins.keyword == "COPY" and "--from=" in ins.value:
            source = re.search(r"--from=(\S+)", ins.value)
            assert source is not None
            assert stages[source.group(1)] < ins.stage, f"{name}: {ins.value}"


def test_runs_as_the_unprivileged_user(dockerfile: tuple[str, list[Instruction]]) -> None:
    """DL3002: the last USER is not root; numeric, so runAsNonRoot can check it."""
    name, instructions = dockerfile
    users = [i.value for i in _final(instructions) if i.keyword == "USER"]
    assert users, f"{name}: no USER in the final stage"
    assert users[-1] == f"{UID}:{UID}", f"{name}: USER {users[-1]}"
    created = " ".join(i.value for i in _final(instructions) if i.keyword == "RUN")
    assert f"--uid {UID}" in created, f"{name}: user {UID} is not created"


def test_shell_hygiene(dockerfile: tuple[str, list[Instruction]]) -> None:
    """DL3000 absolute WORKDIR, DL3004 no sudo, DL3020 COPY not ADD, DL3009/3014/3015 apt-get,
    DL3042 pip without a cache."""
    name, instructions = dockerfile
    for ins in instructions:
        assert ins.keyword != "ADD", f"{name}: ADD {ins.value}"
        if ins.keyword == "WORKDIR":
            assert ins.value.startswith("/"), f"{name}: WORKDIR {ins.value}"
        if ins.keyword != "RUN":
            continue
        for command in re.split(r"&&|;", ins.value):
            words = shlex.split(command)
            assert "sudo" not in words, f"{name}: {command}"
            if words[:2] == ["apt-get", "install"]:
                assert "-y" in words and "--no-install-recommends" in words, f"{name}: {command}"
                assert "rm -rf /var/lib/apt/lists/*" in ins.value, f"{name}: apt lists kept"
            if "pip" in Path(words[0]).name and "install" in words:
                assert "--no-cache-dir" in words, f"{name}: {command}"


def test_entry_point_health_check_and_port(dockerfile: tuple[str, list[Instruction]]) -> None:
    """DL3025: exec-form ENTRYPOINT/CMD; a HEALTHCHECK on the port the service listens on."""
    name, instructions = dockerfile
    final = _final(instructions)
    entry = [_exec_form(i.value) for i in final if i.keyword in {"ENTRYPOINT", "CMD"}]
    assert entry, f"{name}: no entry point"
    checks = [i.value for i in final if i.keyword == "HEALTHCHECK"]
    assert len(checks) == 1, f"{name}: {len(checks)} HEALTHCHECKs"
    probe = _exec_form(checks[0].split(" CMD ", 1)[1])
    if name == "training":
        assert probe == ["ray", "health-check"]
        return
    port = _ports()[name]
    assert [i.value for i in final if i.keyword == "EXPOSE"] == [str(port)]
    assert f"http://127.0.0.1:{port}/health/live" in probe[-1]
    env = " ".join(i.value for i in final if i.keyword == "ENV")
    assert re.search(rf"STAINLESS_{name.upper()}__\w+_PORT={port}\b", env), f"{name}: {env}"
    scripts = tomllib.loads((ROOT / "services" / name / "pyproject.toml").read_text())
    (command,) = [i for i in final if i.keyword == "ENTRYPOINT"]
    program = _exec_form(command.value)
    if name == "worker":
        assert program == ["celery", "-A", "stainless_worker.main", "worker"]
    else:
        assert program == [f"stainless-{name}"]
        assert program[0] in scripts["project"]["scripts"]


def test_installs_only_its_own_packages_pinned(dockerfile: tuple[str, list[Instruction]]) -> None:
    name, instructions = dockerfile
    runs = " ".join(i.value for i in instructions if i.keyword == "RUN")
    assert "--constraint requirements.txt" in runs
    folder = "training" if name == "training" else f"services/{name}"
    assert f"./libs ./{folder}" in runs
    for other in SERVICES:
        if other != name:
            assert f"services/{other}" not in runs


def test_dockerignore_sends_only_sources() -> None:
    lines = [
        line
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert lines[0] == "**"
    included = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert included == {"requirements.txt", "libs", "services", "training"}
