"""The served manifest (``stainless.domain.served``) read from a model repository folder."""

from __future__ import annotations

from pathlib import Path

from stainless.domain.served import MANIFEST, ManifestError, ServedManifest, parse_manifest

__all__ = ["read_manifest"]


def read_manifest(repo: Path) -> ServedManifest:
    """The manifest of a repository folder.

    Raises:
        ManifestError: the file is missing or invalid.
    """
    path = repo / MANIFEST
    if not path.is_file():
        raise ManifestError(f"{path} is missing: export the model with `stainless export`")
    return parse_manifest(path.read_bytes(), source=str(path))
