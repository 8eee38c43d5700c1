"""In-process adapter: the exported TorchScript ``stain_confidence`` run by PyTorch.

It loads the same file Triton serves, so the embedded demo and production compute the
same thing. The noise is drawn from a generator seeded per request, so a batch gives
the same δ every time it is sent. After a switch the version before it stays loaded (as
Triton keeps two versions, ``version_policy``) until the next one. Each version is warmed
on a blank cell as it loads: TorchScript profiles and optimises its graph over its first
calls, which would otherwise slow the first requests.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
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
from stainless.ml.export.triton import WARMUP_CALLS, ServedModel, load_served


class LocalInference:
    def __init__(self, repo: Path, *, model_name: str = "stain_confidence", seed: int = 0) -> None:
        self._repo = repo
        self._model_name = model_name
        self._manifest = read_manifest(repo)
        self._seed = seed
        self._modules = {self._manifest.version: self._load(self._manifest)}
        self._lock = threading.Lock()

    def _load(self, manifest: ServedManifest) -> ServedModel:
        """The version's module, warmed (:data:`WARMUP_CALLS`)."""
        module = load_served(self._repo, self._model_name, manifest.version)
        size = manifest.image_size
        blank = torch.from_numpy(pack_input(np.zeros((1, size, size), np.float32), manifest))
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            for _ in range(WARMUP_CALLS):
                torch.manual_seed(self._seed)
                module(blank)
        return module

    def switch(self, manifest: ServedManifest) -> None:
        """Load the new version's module, then swap it in (an ongoing batch finishes first)."""
        try:
            module = self._load(manifest)
        except (FileNotFoundError, RuntimeError, ValueError) as exc:
            raise InferenceUnavailable(
                f"version {manifest.version} of {self._model_name} cannot be loaded: {exc}"
            ) from exc
        with self._lock:
            previous = self._manifest.version
            self._modules = {previous: self._modules[previous], manifest.version: module}
            self._manifest = manifest

    @property
    def manifest(self) -> ServedManifest:
        return self._manifest

    def infer(self, batch: F32, manifest: ServedManifest | None = None) -> list[CellOutput]:
        with self._lock, torch.no_grad(), torch.random.fork_rng(devices=[]):
            manifest = manifest or self._manifest
            module = self._modules.get(manifest.version)
            if module is None:
                raise InferenceUnavailable(
                    f"version {manifest.version} of {self._model_name} is no longer loaded"
                )
            x = torch.from_numpy(pack_input(batch, manifest))
            torch.manual_seed(self._seed)
            outputs = module(x)
        return unpack_outputs([o.numpy() for o in outputs], manifest, len(batch))

    def ready(self, manifest: ServedManifest | None = None) -> bool:
        return manifest is None or manifest.version in self._modules

    def close(self) -> None:
        return None
