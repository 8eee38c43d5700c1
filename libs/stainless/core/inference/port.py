"""Inference port and the tensor contract of the served ``stain_confidence`` model.

Both adapters (in process and Triton) send one request per micro-batch: DIC crops
``INPUT__0 [B, 1, S, S]`` in [-1, 1]; they get back the stained image ``OUTPUT__0
[B, 3, S, S]`` in [-1, 1], δ ``OUTPUT__1 [B]``, γ ``OUTPUT__2 [B]``, the heat map
``OUTPUT__3 [B, S, S]`` and class probabilities ``OUTPUT__4 [B, classes]``, in the order
of the repository manifest's class names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from stainless.domain.served import ServedManifest

F32 = npt.NDArray[np.float32]

INPUT_NAME = "INPUT__0"
OUTPUT_NAMES = ("OUTPUT__0", "OUTPUT__1", "OUTPUT__2", "OUTPUT__3", "OUTPUT__4")


class InferenceUnavailable(RuntimeError):
    """The server is down, not ready or too slow: try again later, nothing was done."""


class InferenceRejected(ValueError):
    """The request itself is wrong (shape, model): retrying will not help."""


@dataclass(frozen=True, eq=False)
class CellOutput:
    """What the model says about one cell."""

    stained: F32  # [S, S, 3] in [0, 1]
    heatmap: F32  # [S, S], per-pixel variance over the k corrupted outputs
    delta: float  # confidence δ, nats
    gamma: float  # uncertainty γ
    probabilities: dict[str, float]

    @property
    def predicted_class(self) -> str:
        return max(self.probabilities, key=lambda name: self.probabilities[name])


class InferencePort(Protocol):
    @property
    def manifest(self) -> ServedManifest:
        """The served model: version, input side, class names, review threshold."""
        ...

    def infer(self, batch: F32, manifest: ServedManifest | None = None) -> list[CellOutput]:
        """One request for ``batch`` ``[B, S, S]`` in [0, 1] (``dic_unit`` crops), to the
        current version or to ``manifest``'s (the version served before the last switch,
        which slides begun with it finish on).

        Raises:
            InferenceUnavailable: the server cannot answer now, or no longer serves that
                version.
            InferenceRejected: the request is invalid.
        """
        ...

    def ready(self, manifest: ServedManifest | None = None) -> bool:
        """Whether the current version (or ``manifest``'s) is served now."""
        ...

    def switch(self, manifest: ServedManifest) -> None:
        """Serve the repository's new version from now on (between two batches); the
        version before it stays served until the next switch.

        Raises:
            InferenceUnavailable: the new version cannot be loaded; the old one stays.
        """
        ...

    def close(self) -> None: ...


def pack_input(batch: F32, manifest: ServedManifest) -> F32:
    """``[B, S, S]`` in [0, 1] as the served input ``[B, 1, S, S]`` in [-1, 1]."""
    size = manifest.image_size
    if batch.ndim != 3 or batch.shape[0] < 1 or batch.shape[1:] != (size, size):
        raise InferenceRejected(
            f"a batch must be [B, {size}, {size}] for {manifest.model_version}, "
            f"got {tuple(batch.shape)}"
        )
    if not np.all(np.isfinite(batch)):
        raise InferenceRejected("the batch contains NaN or infinite values")
    return np.ascontiguousarray(batch[:, None] * 2 - 1, dtype=np.float32)


def unpack_outputs(
    outputs: Sequence[npt.NDArray[np.generic]], manifest: ServedManifest, batch: int
) -> list[CellOutput]:
    """The five served outputs of ``batch`` cells as :class:`CellOutput` s."""
    if len(outputs) != len(OUTPUT_NAMES):
        raise InferenceRejected(f"expected {len(OUTPUT_NAMES)} outputs, got {len(outputs)}")
    size, classes = manifest.image_size, manifest.classes
    stained, delta, gamma, heat, probabilities = (np.asarray(o, np.float32) for o in outputs)
    # δ and γ are one value per cell: [B] from Triton (reshape), [B, 1] from other servers.
    delta, gamma = delta.reshape(-1), gamma.reshape(-1)
    expected = {
        "stained": (stained.shape, (batch, 3, size, size)),
        "δ": (delta.shape, (batch,)),
        "γ": (gamma.shape, (batch,)),
        "heat map": (heat.shape, (batch, size, size)),
        "probabilities": (probabilities.shape, (batch, len(classes))),
    }
    for what, (got, want) in expected.items():
        if tuple(got) != want:
            raise InferenceRejected(f"the served {what} has shape {tuple(got)}, expected {want}")
    images = ((stained.transpose(0, 2, 3, 1) + 1) / 2).clip(0, 1)
    return [
        CellOutput(
            stained=images[i],
            heatmap=heat[i],
            delta=float(delta[i]),
            gamma=float(gamma[i]),
            probabilities={
                name: float(p) for name, p in zip(classes, probabilities[i], strict=True)
            },
        )
        for i in range(batch)
    ]
