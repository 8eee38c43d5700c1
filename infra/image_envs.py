"""Virtual environments that hold only what each image installs: ``.venv-images/<name>/``.

Every image (``services/<name>/Dockerfile``, ``training/Dockerfile``) runs, in its build
stage, ``pip install --constraint requirements.txt ./libs ./services/<name>`` (training:
``./libs ./training``) into a fresh virtual environment. This script builds the same
environment here, without Docker, so tests can run an image's entry point with exactly
that image's packages (``tests/images``). Each Dockerfile's pip line is read and checked
to be that line: an extra requirement belongs in the distribution's pyproject.toml.

Two layers, like the image's:

* The dependency layer: ``python -m venv``, then ``pip install --constraint
  requirements.txt`` of the two local packages with their dependencies. Built only when
  the stamp file in the environment (``.stainless-image``) does not hold the hash of the
  inputs (requirements.txt, libs/pyproject.toml, the distribution's pyproject.toml, its
  Dockerfile and this Python's version) and the list of distributions installed. A changed
  input, or a package installed by hand, removes the environment and builds it anew, so
  nothing stays behind that the image would not have.
* Unlike the image, nothing is compiled to bytecode at install (``--no-compile``, about
  40% of a build's time): the same files are installed, and an import compiles what it
  uses.
* The code layer, on every run: the two local packages, built as wheels from a copy of the
  current sources (the build context, less what .dockerignore leaves out), reinstalled
  with ``--no-deps --force-reinstall``: non-editable like the image, never stale.

Usage (with the project's virtualenv Python, which the environments are made from):
    python infra/image_envs.py build [NAME ...]   (default: every image)
    python infra/image_envs.py path NAME          (prints the environment's python)

Only the standard library is used, so test fixtures can import this file.
"""

from __future__ import annotations

import argparse
import fcntl
import fnmatch
import hashlib
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENVS = ROOT / ".venv-images"
STAMP = ".stainless-image"
REQUIREMENTS = "requirements.txt"
SERVICES = tuple(sorted(p.parent.name for p in (ROOT / "services").glob("*/Dockerfile")))
IMAGES = (*SERVICES, "training")
# Bumped when the way an environment is built changes: every stamp is then stale.
LAYOUT = "2"
# What .dockerignore keeps out of the build context (and build/, setuptools' leftovers).
IGNORED_NAMES = ("__pycache__", "*.egg-info", "*.pyc", "build")
IGNORED_PATHS = ("training/demo_model", "libs/stainless/*/tests")  # fnmatch: * spans /


class ImageEnvError(RuntimeError):
    """An image's environment could not be built, or its Dockerfile installs otherwise."""


def _log(message: str) -> None:
    print(f"image-envs: {message}", file=sys.stderr, flush=True)


def folder(name: str) -> str:
    """The distribution folder of an image, relative to the repository root."""
    if name not in IMAGES:
        raise ImageEnvError(f"no image {name!r}; the images are {', '.join(IMAGES)}")
    return "training" if name == "training" else f"services/{name}"


def dockerfile(name: str) -> Path:
    return ROOT / folder(name) / "Dockerfile"


def env_dir(name: str) -> Path:
    folder(name)
    return ENVS / name


def env_bin(name: str) -> Path:
    return env_dir(name) / "bin"


def env_python(name: str) -> Path:
    return env_bin(name) / "python"


def expected_install(name: str) -> list[str]:
    """The arguments of ``pip install`` that every image's Dockerfile runs."""
    return ["--constraint", REQUIREMENTS, "./libs", f"./{folder(name)}"]


def instructions(path: Path) -> list[str]:
    """The Dockerfile's instructions, continuation lines joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    if pending:
        logical.append(pending)
    return logical


def dockerfile_install(name: str) -> list[str]:
    """The arguments of the Dockerfile's ``pip install``, less ``--no-cache-dir``.

    Raises:
        ImageEnvError: the Dockerfile has no ``pip install``, or more than one.
    """
    found: list[list[str]] = []
    for instruction in instructions(dockerfile(name)):
        keyword, _, value = instruction.partition(" ")
        if keyword.upper() != "RUN":
            continue
        for command in re.split(r"&&|;", value):
            words = shlex.split(command)
            if words and Path(words[0]).name.startswith("pip") and "install" in words:
                arguments = words[words.index("install") + 1 :]
                found.append([a for a in arguments if a != "--no-cache-dir"])
    if len(found) != 1:
        raise ImageEnvError(f"{dockerfile(name)}: {len(found)} pip install commands, not one")
    return found[0]


def check_dockerfile(name: str) -> None:
    """The Dockerfile installs the two local packages and nothing else.

    Raises:
        ImageEnvError: it installs something else (put it in the pyproject.toml instead).
    """
    found, expected = dockerfile_install(name), expected_install(name)
    if found != expected:
        raise ImageEnvError(
            f"{dockerfile(name).relative_to(ROOT)} runs pip install {shlex.join(found)}, "
            f"not {shlex.join(expected)}: what the image needs belongs in "
            f"{folder(name)}/pyproject.toml"
        )


def inputs(name: str) -> list[Path]:
    """The files the dependency layer is built from."""
    return [
        ROOT / REQUIREMENTS,
        ROOT / "libs" / "pyproject.toml",
        ROOT / folder(name) / "pyproject.toml",
        dockerfile(name),
    ]


def digest(name: str) -> str:
    """Hash of the dependency layer's inputs and of the Python it is made with."""
    sha = hashlib.sha256()
    for part in (LAYOUT, sys.version, getattr(sys, "_base_executable", sys.executable)):
        sha.update(part.encode() + b"\0")
    for path in inputs(name):
        sha.update(path.relative_to(ROOT).as_posix().encode() + b"\0")
        sha.update(hashlib.sha256(path.read_bytes()).hexdigest().encode() + b"\0")
    return sha.hexdigest()


def distributions(name: str) -> list[str]:
    """The distributions installed in the environment (``name-version``), sorted."""
    site = env_dir(name).glob("lib/python*/site-packages/*.dist-info")
    return sorted(path.name.removesuffix(".dist-info") for path in site)


def _stamp(name: str) -> str:
    return json.dumps({"inputs": digest(name), "installed": distributions(name)}, indent=1)


def is_current(name: str) -> bool:
    """The dependency layer exists, was built from the current inputs and holds what it
    held then: a package installed by hand since makes it stale."""
    stamp = env_dir(name) / STAMP
    return env_python(name).exists() and stamp.is_file() and stamp.read_text() == _stamp(name)


def _ignored(root: Path) -> Callable[[str, list[str]], set[str]]:
    def ignore(directory: str, names: list[str]) -> set[str]:
        relative = Path(directory).relative_to(root)
        return {
            entry
            for entry in names
            if any(fnmatch.fnmatch(entry, pattern) for pattern in IGNORED_NAMES)
            or any(
                fnmatch.fnmatch((relative / entry).as_posix(), pattern) for pattern in IGNORED_PATHS
            )
        }

    return ignore


def stage_context(names: Sequence[str], into: Path) -> Path:
    """A copy of the build context the images need: requirements.txt, libs/, their folders."""
    context = into / "context"
    context.mkdir(parents=True)
    shutil.copy2(ROOT / REQUIREMENTS, context / REQUIREMENTS)
    for part in ["libs", *dict.fromkeys(folder(name) for name in names)]:
        shutil.copytree(ROOT / part, context / part, ignore=_ignored(ROOT))
    return context


def _environment() -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PIP_REQUIRE_VIRTUALENV"}
    }
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _run(command: list[str], *, cwd: Path, log: Path) -> None:
    with log.open("a") as out:
        out.write(f"$ {shlex.join(command)}\n")
        out.flush()
        done = subprocess.run(
            command, cwd=cwd, env=_environment(), stdout=out, stderr=subprocess.STDOUT, check=False
        )
    if done.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-40:])
        raise ImageEnvError(
            f"{shlex.join(command)} failed with exit status {done.returncode} (log {log}):\n{tail}"
        )


def build_wheels(names: Sequence[str], context: Path, log: Path) -> dict[str, Path]:
    """Wheels of libs/ and of each image's distribution, from the staged context."""
    parts = ["libs", *dict.fromkeys(folder(name) for name in names)]
    out = context.parent / "wheels"
    command = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out)]
    if importlib.util.find_spec("setuptools") is not None:
        command.append("--no-build-isolation")  # this Python's setuptools: no index round trip
    _run([*command, *(f"./{part}" for part in parts)], cwd=context, log=log)
    wheels: dict[str, Path] = {}
    for part in parts:
        project = (context / part / "pyproject.toml").read_text()
        match = re.search(r'^name\s*=\s*"([^"]+)"', project, flags=re.MULTILINE)
        if match is None:
            raise ImageEnvError(f"{part}/pyproject.toml names no project")
        normalized = re.sub(r"[-_.]+", "_", match.group(1)).lower()
        (wheel,) = out.glob(f"{normalized}-*.whl")
        wheels[part] = wheel
    return wheels


@contextmanager
def _locked(name: str) -> Iterator[None]:
    """One builder of an environment at a time (make image-envs beside a test run)."""
    ENVS.mkdir(exist_ok=True)
    with (ENVS / f".{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _build_one(name: str, context: Path, wheels: dict[str, Path]) -> None:
    env, log = env_dir(name), ENVS / f"{name}.log"
    local = [str(wheels["libs"]), str(wheels[folder(name)])]
    pip = [str(env_python(name)), "-m", "pip", "install", "--quiet", "--no-compile"]
    began = time.monotonic()
    if is_current(name):
        log.write_text("")
        _log(f"{name}: dependencies current; reinstalling stainless and {folder(name)}")
        _run([*pip, "--no-deps", "--force-reinstall", *local], cwd=context, log=log)
    else:
        _log(f"{name}: building {env.relative_to(ROOT)} (inputs changed or no environment)")
        shutil.rmtree(env, ignore_errors=True)
        log.write_text("")
        _run([sys.executable, "-m", "venv", str(env)], cwd=context, log=log)
        _run([*pip, "--constraint", REQUIREMENTS, *local], cwd=context, log=log)
        (env / STAMP).write_text(_stamp(name))
    _log(f"{name}: ready in {time.monotonic() - began:.1f} s ({env_python(name)})")


def build(names: Sequence[str] | None = None) -> dict[str, Path]:
    """Build or refresh the environments of ``names`` (default: every image).

    Returns:
        Each image's environment folder.

    Raises:
        ImageEnvError: a Dockerfile installs something else, or pip failed.
    """
    chosen = list(dict.fromkeys(names or IMAGES))
    for name in chosen:
        folder(name)
        check_dockerfile(name)
    ENVS.mkdir(exist_ok=True)
    (ENVS / ".gitignore").write_text("*\n")
    with tempfile.TemporaryDirectory(prefix="image-envs-") as work:
        context = stage_context(chosen, Path(work))
        began = time.monotonic()
        wheels = build_wheels(chosen, context, Path(work) / "wheels.log")
        _log(f"built the wheels of the current sources in {time.monotonic() - began:.1f} s")
        for name in chosen:
            with _locked(name):
                _build_one(name, context, wheels)
    return {name: env_dir(name) for name in chosen}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build_parser = commands.add_parser("build", help="build or refresh environments")
    build_parser.add_argument("names", nargs="*", metavar="NAME", help=", ".join(IMAGES))
    path_parser = commands.add_parser("path", help="print an environment's python")
    path_parser.add_argument("name", choices=IMAGES, metavar="NAME")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            began = time.monotonic()
            build(args.names)
            _log(f"done in {time.monotonic() - began:.1f} s")
            return 0
        print(env_python(args.name))
        if not is_current(args.name):
            _log(f"{args.name}: not built, or stale: python infra/image_envs.py build {args.name}")
            return 1
        return 0
    except ImageEnvError as exc:
        _log(f"error: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
