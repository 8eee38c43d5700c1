"""``stainless-train bench``: Ray Train throughput on 1 and 2 workers, in one run.

The tiny model 1 trains on phantom cells for ``steps`` steps with 1 worker, then with
2 workers, each worker pinned to one core with one torch thread. Samples per second
are counted from each run's first step on (rank 0's count of the global batch);
``scaling_efficiency`` = throughput₂ / (2 × throughput₁). ``first_step_after_s`` is the
time from calling the trainer to the first finished step (Ray's worker start, data
preparation and the first step included).
"""

from __future__ import annotations

import tempfile
from typing import Any

from stainless_training.config import TrainingConfig
from stainless_training.distributed import Storage, run_distributed


def run_training_bench(*, steps: int = 30, fields: int = 12) -> dict[str, Any]:
    """Needs Ray initialised with at least 2 CPUs."""
    config = TrainingConfig.model_validate(
        {
            "model": "mtmd",
            "size": "tiny",
            "steps": steps,
            "checkpoint_every": steps,
            "batch_size": 4,
            "data": {"phantom_fields": fields},
        }
    )
    runs: dict[int, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as folder:
        for workers in (1, 2):
            result = run_distributed(
                config,
                name=f"bench-{workers}",
                storage=Storage(folder),
                workers=workers,
                report_every=steps,
                pin_cores=True,
            )
            runs[workers] = result.metrics
    one, two = runs[1]["samples_per_s"], runs[2]["samples_per_s"]
    return {
        "model": "mtmd-tiny",
        "steps": steps,
        "samples_per_s_1_worker": one,
        "samples_per_s_2_workers": two,
        "scaling_efficiency": two / (2 * one),
        "first_step_after_s_1_worker": runs[1].get("first_step_after_s"),
        "first_step_after_s_2_workers": runs[2].get("first_step_after_s"),
    }
