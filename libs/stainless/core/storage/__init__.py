"""Object store port: images and artefacts under validated keys."""

from __future__ import annotations

from stainless.core.storage.base import (
    InvalidKeyError,
    ObjectInfo,
    ObjectIntegrityError,
    ObjectNotFoundError,
    ObjectStore,
)
from stainless.core.storage.factory import create_store
from stainless.core.storage.keys import (
    DATASETS_PREFIX,
    MODELS_PREFIX,
    validate_key,
    validate_prefix,
)

__all__ = [
    "DATASETS_PREFIX",
    "MODELS_PREFIX",
    "InvalidKeyError",
    "ObjectInfo",
    "ObjectIntegrityError",
    "ObjectNotFoundError",
    "ObjectStore",
    "create_store",
    "validate_key",
    "validate_prefix",
]
