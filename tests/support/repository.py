"""A new version of the served model in a copy of an exported repository, as a promotion
writes it (without the cost of exporting a checkpoint again)."""

from __future__ import annotations

import shutil
from pathlib import Path

from stainless.core.inference.manifest import read_manifest
from stainless.domain.served import ServedManifest
from stainless.ml.export.triton import write_manifest


def add_version(repo: Path, version: int, model: str = "stain_confidence") -> ServedManifest:
    """Version ``version`` of ``model``: version 1's files; the manifest names it."""
    manifest = read_manifest(repo).model_copy(update={"version": version})
    shutil.copytree(repo / model / "1", repo / model / str(version))
    write_manifest(repo, manifest)
    return manifest
