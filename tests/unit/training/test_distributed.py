"""Gradient averaging of the Ray workers, without Ray: two gloo processes on loopback.

Each process builds the tiny network from its own seed (as if the workers disagreed),
takes rank 0's weights (``broadcast_state``), averages every gradient over both
(``average_gradients``) and steps: both end with the same weights, those of one SGD
step on the mean of their gradients. The processes are forked (the test module is not
importable by a spawned child under pytest's importlib mode).
"""

from __future__ import annotations

import copy
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml
from torch import nn

from stainless_training.config import ModelKind, TrainingConfig
from stainless_training.detector import DetectorTrainConfig, DetectorWorkload
from stainless_training.distributed import (
    WORKLOADS,
    _progress_sink,
    _worker_run,
    average_gradients,
    broadcast_state,
    run_distributed,
)

WORLD = 2


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _network(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 1))


def _data(rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(100 + rank)
    return torch.randn(6, 4, generator=generator), torch.randn(6, 1, generator=generator)


def _gradients(network: nn.Module, rank: int) -> list[torch.Tensor]:
    network.zero_grad(set_to_none=True)
    x, y = _data(rank)
    nn.functional.mse_loss(network(x), y).backward()  # type: ignore[no-untyped-call]
    return [p.grad.clone() for p in network.parameters() if p.grad is not None]


def _worker(rank: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD
    )
    try:
        network = _network(seed=rank)  # different weights on each worker …
        frozen = _network(seed=10 + rank)
        for parameter in frozen.parameters():
            parameter.requires_grad_(False)
        broadcast_state([network, frozen])  # … until rank 0's are broadcast
        # the expected gradient: the mean of both workers' own (on an unhooked copy)
        alone = copy.deepcopy(network)
        local = [_gradients(alone, r) for r in range(WORLD)]
        expected = [(a + b) / WORLD for a, b in zip(*local, strict=True)]
        optimiser = torch.optim.SGD(network.parameters(), lr=0.1)
        average_gradients([optimiser], WORLD)
        _gradients(network, rank)
        optimiser.step()  # averages the gradients first
        averaged = [p.grad.clone() for p in network.parameters() if p.grad is not None]
        torch.save(
            {
                "averaged": averaged,
                "expected": expected,
                "network": dict(network.named_parameters()),
                "frozen": frozen.state_dict(),
            },
            Path(out) / f"rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


def test_two_workers_average_gradients_and_end_with_the_same_weights(tmp_path: Path) -> None:
    mp.start_processes(
        _worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True, start_method="fork"
    )
    first, second = (torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD))
    for ours, theirs in zip(first["averaged"], second["averaged"], strict=True):
        assert torch.equal(ours, theirs)
    for result in (first, second):
        for got, want in zip(result["averaged"], result["expected"], strict=True):
            assert torch.allclose(got, want, atol=1e-6)
    # the parameters agree; batch-norm running statistics stay each worker's own (rank 0
    # checkpoints its own, as DDP's buffer broadcast would have made everyone's)
    for part in ("network", "frozen"):
        for name, value in first[part].items():
            assert torch.equal(second[part][name], value), f"{part}.{name}"
    start = dict(_network(seed=0).named_parameters())
    assert not torch.equal(first["network"]["0.weight"], start["0.weight"])  # it trained
    assert torch.equal(first["frozen"]["0.weight"], _network(seed=10).state_dict()["0.weight"])


def test_every_model_has_a_distributed_workload() -> None:
    assert set(WORKLOADS) == set(ModelKind)


def test_a_detector_run_builds_the_worker_its_detector_workload() -> None:
    config = DetectorTrainConfig(
        steps=2, batch_size=2, crop_px=64, field_um=40.0, pool_size=1, width=4, seed=3
    )
    run = _worker_run({"detector": config.model_dump(mode="json")}, rank=1)
    assert run.config == config and run.config_name == "detector.yaml"
    assert isinstance(run.work, DetectorWorkload) and run.work.rank == 1
    assert DetectorTrainConfig.model_validate(yaml.safe_load(run.config_text)) == config


def test_rank_0_puts_its_progress_on_the_queue() -> None:
    class Queue:
        def __init__(self) -> None:
            self.items: list[dict[str, object]] = []

        def put(self, item: dict[str, object]) -> None:
            self.items.append(item)

    assert _progress_sink(None) is None
    queue = Queue()
    sink = _progress_sink(None, queue)
    assert sink is not None
    sink({"step": 3})
    assert queue.items == [{"step": 3}]


def test_a_translator_without_a_workload_is_refused() -> None:
    config = TrainingConfig(model=ModelKind.MTMD)
    with pytest.MonkeyPatch.context() as patch:
        patch.delitem(WORKLOADS, ModelKind.MTMD)
        with pytest.raises(ValueError, match="not available"):
            run_distributed(config, name="x", storage=None)  # type: ignore[arg-type]
