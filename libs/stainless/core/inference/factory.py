"""Choose the inference adapter from settings (composition roots call this)."""

from __future__ import annotations

from pathlib import Path

from stainless.core.config import InferenceBackend, InferenceSettings
from stainless.core.inference.port import InferencePort


def create_inference(settings: InferenceSettings) -> InferencePort:
    """The local adapter over ``settings.model_repository`` or a Triton client.

    The Triton client reads the same repository's manifest (``stainless.json``) to know the
    version, classes and threshold of what the server serves.
    """
    repo = Path(settings.model_repository)
    if settings.backend is InferenceBackend.LOCAL:
        from stainless.core.inference.local import LocalInference

        return LocalInference(repo, model_name=settings.model_name)
    from stainless.core.inference.manifest import read_manifest
    from stainless.core.inference.triton import TritonInference

    return TritonInference(
        settings.url,
        manifest=read_manifest(repo),
        protocol=settings.protocol,
        model_name=settings.model_name,
        timeout_s=settings.timeout_s,
    )
