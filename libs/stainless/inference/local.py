"""In-process adapter: the exported TorchScript ``stain_confidence`` run by PyTorch.

It loads the same file Triton serves, so the embedded demo and production compute the
same thing. The noise is drawn from a generator seeded per request, so a batch gives
the same δ every time it is sent.
"""

from __future__ import annotations

import threading
from pathlib import Path

import torch

from stainless.export.manifest import ServedManifest, read_manifest
from stainless.export.triton import load_served
from stainless.inference.port import F32, CellOutput, pack_input, unpack_outputs


class LocalInference:
    def __init__(self, repo: Path, *, model_name: str = "stain_confidence", seed: int = 0) -> None:
        self._manifest = read_manifest(repo)
        self._module = load_served(repo, model_name, self._manifest.version)
        self._seed = seed
        self._lock = threading.Lock()

    @property
    def manifest(self) -> ServedManifest:
        return self._manifest

    def infer(self, batch: F32) -> list[CellOutput]:
        x = torch.from_numpy(pack_input(batch, self._manifest))
        with self._lock, torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(self._seed)
            outputs = self._module(x)
        return unpack_outputs([o.numpy() for o in outputs], self._manifest, len(batch))

    def ready(self) -> bool:
        return True

    def close(self) -> None:
        return None
