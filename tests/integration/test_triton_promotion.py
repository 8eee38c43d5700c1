"""Promotion on the real Triton server: repository control and the server's statistics.

A switch loads the promoted version through repository control while the version before
it stays served (``version_policy`` keeps two), so slides begun with it can finish; the
next promotion unloads it. Triton counts each version's requests, cells and formed
batches, the warm-up on a blank cell as a version loads among them (a reload may start a
version's counts again, as a restarted process does its counters), and the inference
service's Prometheus collector shows them.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from stainless.core.inference.manifest import read_manifest
from stainless.core.inference.port import InferenceUnavailable
from stainless.core.inference.statistics import TritonStatisticsCollector, parse_statistics
from stainless.core.inference.triton import TritonInference
from stainless.ml.export.triton import WARMUP_CALLS

from ..support.repository import add_version

pytestmark = pytest.mark.integration


def _batch(n: int, size: int) -> np.ndarray:
    return np.random.default_rng(0).random((n, size, size), dtype=np.float32)


def _counted(adapter: TritonInference, version: str, requests: int) -> dict[str, Any]:
    """The server's statistics once ``version`` has counted ``requests`` (or after 10 s).

    Triton reports a model's statistics after the model has sent its responses, so the
    counts may lag an answer the client already holds by a moment.
    """
    deadline = time.monotonic() + 10
    while True:
        stats = {s.version: s for s in parse_statistics(adapter.statistics())}
        if stats[version].requests >= requests or time.monotonic() > deadline:
            return stats
        time.sleep(0.05)


def test_a_promotion_keeps_the_version_before_it_served_until_the_next(
    own_triton: Callable[[Path], Any], exported_python_repo: Path, tmp_path: Path
) -> None:
    repo = tmp_path / "models"
    shutil.copytree(exported_python_repo, repo)
    server = own_triton(repo)
    first = read_manifest(repo)
    adapter = TritonInference(server.grpc_url, manifest=first, timeout_s=30)
    batch = _batch(3, first.image_size)
    before = adapter.infer(batch)

    second = add_version(repo, 2)
    adapter.switch(second)
    assert adapter.manifest == second
    assert adapter.ready() and adapter.ready(first)
    after = adapter.infer(batch)  # version 2 holds version 1's files: the same answers
    assert [c.delta for c in after] == pytest.approx([c.delta for c in before], abs=1e-4)
    earlier = _counted(adapter, "2", 1 + WARMUP_CALLS)
    adapter.infer(batch[:1], first)  # a slide begun with version 1 finishes on it

    stats = _counted(adapter, "1", earlier["1"].requests + 1)
    one, was = stats["1"], earlier["1"]
    assert (one.requests - was.requests, one.inferences - was.inferences) == (1, 1)
    warmup = WARMUP_CALLS  # version 2 was warmed on a blank cell as it loaded: Triton counts it
    two = stats["2"]
    assert (two.requests, two.inferences, two.batches) == (
        1 + warmup,
        3 + warmup,
        {1: warmup, 3: 1},
    )
    assert stats["2"].seconds["compute_infer"] > 0

    registry = CollectorRegistry()
    registry.register(TritonStatisticsCollector(adapter.statistics))
    text = generate_latest(registry).decode()
    assert "stainless_triton_statistics_up 1.0" in text
    served = (
        f'stainless_triton_inferences_total{{model="stain_confidence",version="2"}} {3 + warmup}.0'
    )
    assert served in text
    assert 'stainless_triton_seconds_total{model="stain_confidence",phase="queue",version="1"}' in (
        text
    )

    third = add_version(repo, 3)
    adapter.switch(third)
    assert adapter.ready(second) and not adapter.ready(first)
    with pytest.raises(InferenceUnavailable, match="version 1"):
        adapter.infer(batch[:1], first)

    server.stop()
    assert "stainless_triton_statistics_up 0.0" in generate_latest(registry).decode()
    adapter.close()
