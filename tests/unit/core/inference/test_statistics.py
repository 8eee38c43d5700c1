"""Triton's statistics answer, read in both of its forms, and the collector's metrics."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from stainless.core.inference.statistics import TritonStatisticsCollector, parse_statistics


def _answer(number: Any) -> dict[str, Any]:
    """One version's statistics; ``number`` writes integers as gRPC (str) or HTTP (int)."""
    timed = {"count": number(2), "ns": number(3_000_000)}
    return {
        "model_stats": [
            {
                "name": "stain_confidence",
                "version": "4",
                "inference_count": number(9),
                "execution_count": number(2),
                "inference_stats": {
                    "success": {"count": number(3), "ns": number(9_000_000)},
                    "fail": {},
                    "queue": timed,
                    "compute_infer": {"count": number(2), "ns": number(500_000_000)},
                },
                "batch_stats": [
                    {"batch_size": number(4), "compute_infer": {"count": number(1)}},
                    {"batch_size": number(5), "compute_infer": {"count": number(1)}},
                ],
            }
        ]
    }


@pytest.mark.parametrize("number", [str, int], ids=["grpc", "http"])
def test_both_forms_read_alike(number: Any) -> None:
    (stats,) = parse_statistics(_answer(number))
    assert (stats.model, stats.version) == ("stain_confidence", "4")
    assert (stats.requests, stats.inferences, stats.executions) == (3, 9, 2)
    assert stats.batches == {4: 1, 5: 1} and stats.mean_batch == 4.5
    assert stats.seconds == {
        "queue": 0.003,
        "compute_input": 0.0,
        "compute_infer": 0.5,
        "compute_output": 0.0,
    }
    assert parse_statistics({}) == []


def test_the_collector_reports_the_answer_or_that_there_was_none() -> None:
    down = False

    def read() -> dict[str, Any]:
        if down:
            raise ConnectionError("down")
        return _answer(str)

    registry = CollectorRegistry()
    registry.register(TritonStatisticsCollector(read))
    text = generate_latest(registry).decode()
    assert "stainless_triton_statistics_up 1.0" in text
    assert (
        'stainless_triton_batch_executions_total{batch_size="5",model="stain_confidence",'
        'version="4"} 1.0' in text
    )
    assert 'stainless_triton_executions_total{model="stain_confidence",version="4"} 2.0' in text
    down = True
    text = generate_latest(registry).decode()
    assert "stainless_triton_statistics_up 0.0" in text
    assert "stainless_triton_executions_total{" not in text
