"""Choose the inference adapter from settings (composition roots call this)."""

from __future__ import annotations

from pathlib import Path

import structlog

from stainless.core.config import InferenceBackend, InferenceSettings
from stainless.core.inference.port import InferencePort
from stainless.domain.served import ServedManifest

log = structlog.get_logger(__name__)


def create_inference(
    settings: InferenceSettings, manifest: ServedManifest | None = None
) -> InferencePort:
    """The local adapter over ``settings.model_repository`` or a Triton client.

    The Triton client reads the same repository's manifest (``stainless.json``; or takes
    ``manifest``, read from where the server's repository is) to know the
    version, classes and threshold of what the server serves, and checks the served model's
    configuration against it: at once, or when a server that does not answer yet first does
    (the service starts and waits for it; a mismatch found then keeps it not ready).

    Raises:
        ServedModelMismatch: the server serves the model with another configuration.
    """
    repo = Path(settings.model_repository)
    if settings.backend is InferenceBackend.LOCAL:
        from stainless.core.inference.local import LocalInference

        return LocalInference(repo, model_name=settings.model_name)
    from stainless.core.inference.manifest import read_manifest
    from stainless.core.inference.port import InferenceUnavailable
    from stainless.core.inference.triton import ServedModelMismatch, TritonInference

    adapter = TritonInference(
        settings.url,
        manifest=manifest or read_manifest(repo),
        protocol=settings.protocol,
        model_name=settings.model_name,
        timeout_s=settings.timeout_s,
    )
    try:
        adapter.verify(settings.max_batch)  # a mismatch stops the service here
    except InferenceUnavailable as exc:
        log.warning("inference.config_checked_later", reason=str(exc))
        adapter.verify_later(settings.max_batch)
    except ServedModelMismatch:
        adapter.close()
        raise
    return adapter
