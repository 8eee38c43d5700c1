"""Where the inference stage's time goes: seconds per phase of each micro-batch.

The stainer times every micro-batch in phases — ``read`` (load and decode the DIC crops),
``infer`` (the round trip to the inference port), ``encode`` (the stained crop and the
heat map as PNG) and ``store`` (their puts) — and the handler times the ``query``,
``record`` (the flush of the prediction rows and events) and ``complete`` work around
them; the commit of the transaction is the bus's, outside the profile. Each phase is a Prometheus
histogram (``stainless_inference_phase_seconds``) and, for benchmarks and the demo's
summary, a running total with the micro-batch sizes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from prometheus_client import Histogram

PHASE_SECONDS = Histogram(
    "stainless_inference_phase_seconds",
    "Seconds of one phase of the inference stage (per micro-batch or handler call)",
    ["phase"],
)


class Phase(StrEnum):
    QUERY = "query"  # cells, signed slides, versions and earlier predictions
    READ = "read"
    INFER = "infer"
    ENCODE = "encode"
    STORE = "store"
    RECORD = "record"  # the flush of the prediction rows and events
    COMPLETE = "complete"  # completion checks of the handled slides


@dataclass
class StageProfile:
    """Running totals of the stage's phases and the sizes of its micro-batches."""

    seconds: dict[Phase, float] = field(default_factory=lambda: dict.fromkeys(Phase, 0.0))
    batch_sizes: list[int] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @contextmanager
    def phase(self, phase: Phase) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(phase, time.perf_counter() - started)

    def add(self, phase: Phase, seconds: float) -> None:
        PHASE_SECONDS.labels(phase.value).observe(seconds)
        with self._lock:
            self.seconds[phase] += seconds

    def batch(self, size: int) -> None:
        with self._lock:
            self.batch_sizes.append(size)

    def clear(self) -> None:
        with self._lock:
            self.seconds = dict.fromkeys(Phase, 0.0)
            self.batch_sizes = []

    def as_dict(self) -> dict[str, Any]:
        """Totals in seconds, the micro-batch sizes and milliseconds per micro-batch."""
        with self._lock:
            batches = len(self.batch_sizes)
            return {
                "batch_sizes": list(self.batch_sizes),
                "seconds": {p.value: round(s, 4) for p, s in self.seconds.items()},
                "ms_per_batch": {
                    p.value: round(1000 * s / batches, 2) if batches else None
                    for p, s in self.seconds.items()
                },
            }
