"""Choose the object-store adapter from settings."""

from __future__ import annotations

from stainless.core.config import StoreBackend, StoreSettings
from stainless.core.storage.base import ObjectStore


def create_store(settings: StoreSettings) -> ObjectStore:
    """The configured store; an S3 bucket is created when missing (``create_bucket``)."""
    if settings.backend is StoreBackend.S3:
        from stainless.core.storage.s3 import S3ObjectStore

        store = S3ObjectStore.from_settings(settings)
        if settings.create_bucket:
            store.ensure_bucket()
        return store
    from stainless.core.storage.local import LocalObjectStore

    return LocalObjectStore(settings.root)
