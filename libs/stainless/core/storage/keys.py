"""Object keys: slash-separated relative paths, checked before any I/O."""

from __future__ import annotations

import re

MAX_KEY_LENGTH = 512
DATASETS_PREFIX = "datasets"
"""Dataset snapshots and the objects imported with them."""
MODELS_PREFIX = "models"
"""Trained checkpoints and the model repository served by Triton."""
_ALLOWED = re.compile(r"^[A-Za-z0-9._\-=+/]+$")
_CROP = re.compile(r"_(?:dic|bf)_(?P<size>[1-9][0-9]*)\.png$")


class InvalidKeyError(ValueError):
    """An object key that could escape its store or is otherwise malformed."""


def validate_key(key: str) -> str:
    """Return ``key`` unchanged if it is a safe object key, else raise :class:`InvalidKeyError`.

    A key is a relative path of non-empty segments separated by ``/``: no segment
    starting with a dot (so no ``..``), no leading or trailing slash, no empty
    segment, no backslash, only letters, digits and ``._-=+``.
    """
    if not isinstance(key, str) or not key:
        raise InvalidKeyError("object key is empty")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidKeyError(f"object key is longer than {MAX_KEY_LENGTH} characters")
    if key.startswith("/"):
        raise InvalidKeyError(f"object key {key!r} is absolute")
    if not _ALLOWED.match(key):
        raise InvalidKeyError(f"object key {key!r} has characters outside A-Za-z0-9._-=+/")
    for segment in key.split("/"):
        if segment == "":
            raise InvalidKeyError(f"object key {key!r} has an empty segment")
        if segment in (".", ".."):
            raise InvalidKeyError(f"object key {key!r} has a {segment!r} segment")
        if segment.startswith("."):
            raise InvalidKeyError(f"object key {key!r} has a hidden segment {segment!r}")
    return key


def validate_prefix(prefix: str) -> str:
    """A listing prefix: empty, or a key optionally ending in ``/``."""
    if prefix == "":
        return prefix
    validate_key(prefix.removesuffix("/"))
    return prefix


def crop_key(stem: str, modality: str, size: int) -> str:
    """The key of a cell's ``size`` px crop in ``modality`` (``dic`` or ``bf``)."""
    return validate_key(f"{stem}_{modality}_{size}.png")


def crop_size_of(key: str) -> int | None:
    """The side of the crop a :func:`crop_key` names; None for any other key."""
    match = _CROP.search(key)
    return int(match["size"]) if match else None
