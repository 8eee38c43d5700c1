"""Triton's dynamic batching measured against the same cells sent one by one.

Against a running Triton server (``make up`` serves one on 127.0.0.1:8001) and the
repository it serves (for the model's version and input side), in one run:

* ``one_by_one``: each cell in a request of its own, one request after the other, from
  one client: the server has nothing to join;
* ``concurrent``: the same cells, a request per cell, from ``clients`` clients at once:
  Triton's dynamic batcher joins the requests waiting in its queue into one execution.

For each: cells/s, the p50 and p95 request latency in milliseconds, and the batches the
server formed (batch size → executions; the difference of its statistics before and
after, so other traffic on the server during the run is counted too). ``ratio`` is the
concurrent cells/s over the one-by-one cells/s. A server that seeds the confidence head's
noise per request (the tests' ``STAINLESS_NOISE_SEED``) runs its requests alone even when
it forms batches; ``make up``'s server does not.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from stainless.core.inference.port import INPUT_NAME
from stainless.core.inference.statistics import ModelStatistics, parse_statistics
from stainless.core.inference.triton import TritonClient

WARM_UP = 4  # requests before the measured ones (the model's first calls are slower)
STATISTICS_WAIT_S = 2.0  # for the server's statistics to count the last requests


class BenchSetupError(ValueError):
    """The model cannot be benchmarked this way (a cell model with a fixed input is needed)."""


def _input_dims(config: dict[str, Any], model: str) -> list[int]:
    inputs = [i for i in config.get("input", []) if i.get("name") == INPUT_NAME]
    dims = [int(d) for d in inputs[0].get("dims", [])] if inputs else []
    if not dims or any(d < 1 for d in dims):
        raise BenchSetupError(
            f"{model} has no fixed-size {INPUT_NAME} ({dims or 'none'}): choose a cell model "
            "(stain_confidence, stain, classify, segment)"
        )
    return dims


def _statistics(client: TritonClient, model: str, version: str) -> ModelStatistics | None:
    found = parse_statistics(client.statistics(model, version))
    return found[0] if found else None


def _formed(before: ModelStatistics | None, after: ModelStatistics | None) -> dict[str, int]:
    """Batch size → executions between two readings of the statistics."""
    if after is None:
        return {}
    earlier = before.batches if before is not None else {}
    formed = {size: n - earlier.get(size, 0) for size, n in after.batches.items()}
    return {str(size): n for size, n in sorted(formed.items()) if n > 0}


def _cells(formed: dict[str, int]) -> int:
    return sum(int(size) * n for size, n in formed.items())


def _phase(
    client: TritonClient,
    model: str,
    version: str,
    cells: np.ndarray,
    outputs: list[str],
    clients: int,
    on_step: Callable[[], None],
) -> dict[str, Any]:
    latencies: list[float] = []

    def send(cell: np.ndarray) -> None:
        began = time.perf_counter()
        client.infer(model, version, cell[None], outputs)
        latencies.append(time.perf_counter() - began)
        on_step()

    before = _statistics(client, model, version)
    started = time.perf_counter()
    if clients == 1:
        for cell in cells:
            send(cell)
    else:
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(send, cells))
    seconds = time.perf_counter() - started
    formed = _formed(before, _statistics(client, model, version))
    deadline = time.monotonic() + STATISTICS_WAIT_S
    while _cells(formed) < len(cells) and time.monotonic() < deadline:
        time.sleep(0.05)  # the server counts a request just after answering it
        formed = _formed(before, _statistics(client, model, version))
    executions = sum(formed.values())
    p50, p95 = np.percentile(np.array(latencies) * 1000, [50, 95])
    return {
        "clients": clients,
        "seconds": round(seconds, 3),
        "cells_per_s": round(len(cells) / seconds, 2),
        "latency_p50_ms": round(float(p50), 2),
        "latency_p95_ms": round(float(p95), 2),
        "batches_formed": formed,
        "mean_batch": round(len(cells) / executions, 2) if executions else None,
    }


def run_triton_bench(
    client: TritonClient,
    *,
    model: str,
    version: str,
    cells: int = 64,
    clients: int = 8,
    seed: int = 0,
    on_step: Callable[[], None] = lambda: None,
) -> dict[str, Any]:
    """Both phases on ``cells`` random cells of the model's input side (see the module).

    Raises:
        BenchSetupError: the model has no fixed-size cell input.
        InferenceUnavailable: the server or the model cannot be reached.
        InferenceRejected: the server refuses the requests.
    """
    config = client.model_config(model, version)
    dims = _input_dims(config, model)
    outputs = [str(o["name"]) for o in config.get("output", [])]
    batch = np.random.default_rng(seed).random((cells, *dims), dtype=np.float32) * 2 - 1
    for cell in batch[:WARM_UP]:
        client.infer(model, version, cell[None], outputs)
    one_by_one = _phase(client, model, version, batch, outputs, 1, on_step)
    concurrent = _phase(client, model, version, batch, outputs, clients, on_step)
    return {
        "server": client.url,
        "model": model,
        "version": version,
        "cells": cells,
        "max_batch_size": int(config.get("max_batch_size", 0)),
        "max_queue_delay_us": int(
            config.get("dynamic_batching", {}).get("max_queue_delay_microseconds", 0)
        ),
        "one_by_one": one_by_one,
        "concurrent": concurrent,
        "ratio": round(concurrent["cells_per_s"] / one_by_one["cells_per_s"], 3),
    }
