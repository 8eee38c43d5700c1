"""In-process adapter: the exported TorchScript ``stain_confidence`` run by PyTorch.

It loads the same file Triton serves, so the embedded demo and production compute the
same thing. The noise is drawn from a generator seeded per request, so a batch gives
the same δ every time it is sent.
"""

from __future__ import annotations

import threading
from pathlib import Path

import torch

from stainless.core.inference.manifest import read_manifest
from stainless.core.inference.port import (
    F32,
    CellOutput,
    InferenceUnavailable,
    pack_input,
    unpack_outputs,
)
from stainless.domain.served import ServedManifest
from stainless.ml.export.triton import load_served


class LocalInference:
    def __init__(self, repo: Path, *, model_name: str = "stain_confidence", seed: int = 0) -> None:
        self._repo = repo
        self._model_name = model_name
        self._manifest = read_manifest(repo)
        self._module = load_served(repo, model_name, self._manifest.version)
        self._seed = seed
        self._lock = threading.Lock()

    def switch(self, manifest: ServedManifest) -> None:
        """Load the new version's module, then swap it in (an ongoing batch finishes first)."""
        try:
            module = load_served(self._repo, self._model_name, manifest.version)
        except (FileNotFoundError, RuntimeError, ValueError) as exc:
            raise InferenceUnavailable(
                f"version {manifest.version} of {self._model_name} cannot be loaded: {exc}"
            ) from exc
        with self._lock:
            self._module, self._manifest = module, manifest

    @property
    def manifest(self) -> ServedManifest:
        return self._manifest

    def infer(self, batch: F32) -> list[CellOutput]:
        with self._lock, torch.no_grad(), torch.random.fork_rng(devices=[]):
            manifest = self._manifest
            x = torch.from_numpy(pack_input(batch, manifest))
            torch.manual_seed(self._seed)
            outputs = self._module(x)
        return unpack_outputs([o.numpy() for o in outputs], manifest, len(batch))

    def ready(self) -> bool:
        return True

    def close(self) -> None:
        return None
