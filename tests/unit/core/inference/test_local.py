"""The in-process inference adapter warms each version as it loads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from stainless.core.inference import local
from stainless.core.inference.local import WARMUP_CALLS, LocalInference
from stainless.ml.export.triton import ServedModel, load_served


def test_each_version_is_warmed_on_a_blank_cell_as_it_loads(
    exported_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[int, tuple[int, ...], float]] = []

    def counted(repo: Path, name: str, version: int = 1) -> ServedModel:
        module = load_served(repo, name, 1)  # the repository holds version 1 only

        def run(x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
            calls.append((version, tuple(x.shape), float(x.abs().max())))
            return module(x)

        return run

    monkeypatch.setattr(local, "load_served", counted)
    inference = LocalInference(exported_repo)
    size = inference.manifest.image_size
    blank = (1, 1, size, size)
    assert WARMUP_CALLS >= 1
    assert calls == [(1, blank, 1.0)] * WARMUP_CALLS  # zeros in [0, 1]: -1 once packed
    inference.infer(np.full((3, size, size), 0.5, np.float32))
    assert calls[-1] == (1, (3, 1, size, size), 0.0)
    calls.clear()
    inference.switch(inference.manifest.model_copy(update={"version": 2}))
    assert calls == [(2, blank, 1.0)] * WARMUP_CALLS
