"""Triton's own statistics of a served model (the statistics extension), read and exposed.

Triton counts, per model and version, the requests it answered, the batches it ran
(its dynamic batcher may join several requests into one), and the time each request
spent queued and computing. :func:`parse_statistics` reads its JSON answer (gRPC gives
64-bit integers as strings, HTTP as numbers); :class:`TritonStatisticsCollector` asks the
server at every Prometheus scrape, so the inference service's ``/metrics`` shows the
server's queue and compute time beside the stage's own round-trip time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

log = structlog.get_logger(__name__)

PHASES = ("queue", "compute_input", "compute_infer", "compute_output")
"""The phases of a request Triton times (``inference_stats``), in order."""


@dataclass(frozen=True)
class ModelStatistics:
    """What the server counted for one version of one model since it loaded it."""

    model: str
    version: str
    requests: int  # successful requests (each one micro-batch of the stage)
    inferences: int  # cells inferred (the batch dimension summed)
    executions: int  # model executions (batches formed by the dynamic batcher)
    seconds: dict[str, float] = field(default_factory=dict)  # per phase, summed over requests
    batches: dict[int, int] = field(default_factory=dict)  # batch size → executions

    @property
    def mean_batch(self) -> float:
        """Cells per execution: above the stage's request size when Triton joined requests."""
        return self.inferences / self.executions if self.executions else 0.0


def _count(block: Mapping[str, Any] | None) -> tuple[int, float]:
    block = block or {}
    return int(block.get("count", 0)), int(block.get("ns", 0)) / 1e9


def parse_statistics(answer: Mapping[str, Any]) -> list[ModelStatistics]:
    """The statistics of every model version in Triton's answer (``model_stats``)."""
    parsed = []
    for entry in answer.get("model_stats", []):
        stats = entry.get("inference_stats", {})
        batches = {}
        for batch in entry.get("batch_stats", []):
            executions, _ = _count(batch.get("compute_infer"))
            batches[int(batch.get("batch_size", 0))] = executions
        parsed.append(
            ModelStatistics(
                model=str(entry.get("name", "")),
                version=str(entry.get("version", "")),
                requests=_count(stats.get("success"))[0],
                inferences=int(entry.get("inference_count", 0)),
                executions=int(entry.get("execution_count", 0)),
                seconds={phase: _count(stats.get(phase))[1] for phase in PHASES},
                batches=dict(sorted(batches.items())),
            )
        )
    return parsed


class TritonStatisticsCollector(Collector):
    """Prometheus metrics of the server's statistics, read at each scrape.

    Args:
        read: returns Triton's statistics answer (of the models to report, every version).
    """

    def __init__(self, read: Callable[[], Mapping[str, Any]]) -> None:
        self._read = read

    def collect(self) -> Iterator[Any]:
        up = GaugeMetricFamily(
            "stainless_triton_statistics_up",
            "Whether the inference server answered the last statistics request",
        )
        labels = ["model", "version"]
        requests = CounterMetricFamily(
            "stainless_triton_requests", "Requests the server answered", labels=labels
        )
        inferences = CounterMetricFamily(
            "stainless_triton_inferences", "Cells the server inferred", labels=labels
        )
        executions = CounterMetricFamily(
            "stainless_triton_executions",
            "Batches the server ran (after dynamic batching)",
            labels=labels,
        )
        seconds = CounterMetricFamily(
            "stainless_triton_seconds",
            "Time requests spent in each phase on the server (queue, compute_input, "
            "compute_infer, compute_output)",
            labels=[*labels, "phase"],
        )
        batches = CounterMetricFamily(
            "stainless_triton_batch_executions",
            "Batches the server ran, by batch size",
            labels=[*labels, "batch_size"],
        )
        try:
            found = parse_statistics(self._read())
        except Exception as exc:  # noqa: BLE001 - a scrape must not fail with the server
            log.debug("triton statistics unavailable", error=str(exc))
            found = None
        up.add_metric([], 0 if found is None else 1)
        for stats in found or []:
            key = [stats.model, stats.version]
            requests.add_metric(key, stats.requests)
            inferences.add_metric(key, stats.inferences)
            executions.add_metric(key, stats.executions)
            for phase, value in stats.seconds.items():
                seconds.add_metric([*key, phase], value)
            for size, count in stats.batches.items():
                batches.add_metric([*key, str(size)], count)
        yield from (up, requests, inferences, executions, seconds, batches)
