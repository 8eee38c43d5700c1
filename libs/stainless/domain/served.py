"""``stainless.json`` at the root of a model repository: what a client needs to call it.

The contract between the exporter that writes a repository (``stainless.ml.export``) and
every client that serves from it (``stainless.core.inference.manifest`` reads it).

Triton serves tensors; the manifest says what they mean: the model version recorded
with every prediction, the input side, the class names of the probabilities, the noise
settings baked into ``stain_confidence``, which δ it computes, whose classifier gives the
probabilities and the calibrated δ review threshold.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

MANIFEST = "stainless.json"


class ConfidenceVariant(StrEnum):
    """Which δ a model computes (every δ carries its variant's name)."""

    WHOLE_LATENT = "whole-latent"  # thesis ch. 7: noise on the latent, masked to the cell (model 1)
    # thesis ch. 7 as written: noise on the whole latent, no mask (model 3 has no segmenter)
    WHOLE_LATENT_UNMASKED = "whole-latent-unmasked"
    DISENTANGLED = "disentangled"  # thesis ch. 6, Algorithm 2: structure and style noise


class ManifestError(ValueError):
    """The repository has no readable manifest."""


class InstanceKind(StrEnum):
    """Where Triton runs a model: GPU or CPU instances of its native backend (onnxruntime,
    libtorch), or CPU instances of its python backend, whose ``model.py`` runs the same
    ``model.onnx`` / ``model.pt`` (a Triton built without the native backends, as the one
    the tests run)."""

    GPU = "gpu"
    CPU = "cpu"
    CPU_PYTHON = "cpu-python"


class ServedManifest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$", max_length=48)
    version: int = Field(ge=1)
    image_size: int = Field(ge=8)
    crop_size: int = Field(
        default=256,
        ge=32,
        description="Side of the DIC crop the model takes, resized to image_size: 256 px "
        "(thesis ch. 4.4) or 360 px (the clinical study, ch. 8.1.1).",
    )
    classes: tuple[str, ...] = Field(min_length=2)
    k: int = Field(ge=1)
    alpha: float = Field(ge=0, description="Noise scale on the latent (model 1) or structure.")
    beta: float | None = Field(
        default=None, ge=0, description="Noise scale on the style code (model 2 only)."
    )
    review_threshold: float = Field(ge=0, description="Cells with δ below it need review.")
    confidence_variant: ConfidenceVariant = Field(
        default=ConfidenceVariant.WHOLE_LATENT,
        description="Which δ the served stain_confidence computes.",
    )
    calibrated_probabilities: bool = Field(
        default=False,
        description="The class probabilities are calibrated on held-out cells (a scale and "
        "a bias per class on the logits); false: the classifier's raw softmax.",
    )
    classifier: str | None = Field(
        default=None,
        description="The model whose classifier gives the probabilities, when this model "
        "has none (model 2 serves model 1's).",
    )
    model_version_id: str | None = Field(
        default=None, description="The registry's model version served (after a promotion)."
    )
    registered_as: str | None = Field(
        default=None,
        max_length=64,
        description="The registry's NAME/VERSION of the model served; unset for an export "
        "that is not registered.",
    )
    checkpoint_sha256: str | None = Field(
        default=None, description="SHA-256 of the training checkpoint this was exported from."
    )

    @property
    def model_version(self) -> str:
        """What prediction rows record: the registry's name (e.g. ``mtmd-tiny/3``), or for an
        unregistered export its name and repository version folder."""
        return self.registered_as or f"{self.name}/{self.version}"


def parse_manifest(text: str | bytes, *, source: str) -> ServedManifest:
    try:
        return ServedManifest.model_validate_json(text)
    except ValidationError as exc:
        raise ManifestError(f"{source} is not a valid model manifest: {exc}") from None


def file_sha256(path: Path) -> str:
    """SHA-256 of a file (a checkpoint), in hex: how the registry and a manifest name it."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
