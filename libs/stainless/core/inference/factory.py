"""Choose the inference adapter from settings (composition roots call this)."""

from __future__ import annotations

from pathlib import Path

import structlog

from stainless.core.config import InferenceBackend, InferenceSettings
from stainless.core.inference.port import InferencePort

log = structlog.get_logger(__name__)


def create_inference(settings: InferenceSettings) -> InferencePort:
    """The local adapter over ``settings.model_repository`` or a Triton client.

    The Triton client reads the same repository's manifest (``stainless.json``) to know the
    version, classes and threshold of what the server serves, and checks the served model's
    configuration against it when the server answers (one that does not answer yet is not
    checked: the service starts and waits for it).

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
        manifest=read_manifest(repo),
        protocol=settings.protocol,
        model_name=settings.model_name,
        timeout_s=settings.timeout_s,
    )
    try:
        adapter.verify(settings.max_batch)  # a mismatch stops the service here
    except InferenceUnavailable as exc:
        log.warning("inference.config_not_checked", reason=str(exc))
    except ServedModelMismatch:
        adapter.close()
        raise
    return adapter
