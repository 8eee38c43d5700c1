"""Distributed training on Ray Train: one trainer per worker, gradients averaged across them.

``run_distributed`` starts a Ray Train ``TorchTrainer`` (gloo on CPU, NCCL on GPU; the
local machine by default, a cluster when an address is given). Every worker builds the
same networks from the same seed, loads the last checkpoint when Ray restarts it, and
trains on its own share of the class-balanced batches: step ``s`` of worker ``r`` of
``n`` takes batch ``s·n + r`` of the run's batch plan, so the global batch grows with the
workers and a resumed run sees the batches an uninterrupted one would.

The translators are driven through several entry points (encode, decode, classify,
segment), which ``DistributedDataParallel``'s forward hooks would not see; the
all-reduce DDP performs is done by the optimisers instead: before each optimiser
step, the gradients it is about to apply are flattened into one buffer, averaged over
the workers in one collective, and copied back (DDP's bucketing, one bucket per step).

The learned white-cell detector is no translator (no ``ModelKind``, no job rows): a
``DetectorTrainConfig`` given to ``run_distributed`` runs a ``DetectorWorkload`` in the
same loop. Its workers draw their own crops, each from fields of its own (``rank``), so
the batch plan only numbers them; the global batch grows with the workers all the same.

Rank 0 reports metrics every ``report_every`` steps and a checkpoint (``checkpoint.pt``
and the frozen ``config.yaml``, or ``detector.yaml`` for a detector) every
``checkpoint_every`` steps to Ray's storage: a local folder or the S3 object store.
``on_progress`` gets rank 0's progress in the calling process, through a Ray queue.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
import torch.distributed as dist
from torch import nn

from stainless_training.config import ModelKind, TrainingConfig, dump_config
from stainless_training.kinds import KINDS, trainer_module
from stainless_training.plumbing import SampleSource
from stainless_training.runs import CHECKPOINT, batch_plan

if TYPE_CHECKING:
    from stainless_training.detector import DetectorTrainConfig

Logs = dict[str, float]
Progress = Callable[[dict[str, Any]], None]


class Workload(Protocol):
    """What a worker trains: networks, the samples' classes and one optimisation step."""

    @property
    def modules(self) -> Sequence[nn.Module]: ...

    @property
    def optimizers(self) -> Sequence[torch.optim.Optimizer]: ...

    @property
    def labels(self) -> Sequence[int]: ...

    @property
    def batch_size(self) -> int: ...

    def to(self, device: torch.device) -> None: ...

    def step(self, indices: list[int], step: int) -> Logs: ...

    def state(self, step: int) -> dict[str, object]: ...

    def load(self, state: dict[str, object]) -> int: ...

    # Optional: ``frozen`` (networks every worker needs identical but nobody trains: rank 0
    # broadcasts them, their gradients are not averaged) and ``prepare()`` (run at the start
    # of a fresh run, not when resuming from a checkpoint).


WorkloadFactory = Callable[[TrainingConfig, SampleSource | None], Workload]


def _workload(config: TrainingConfig, samples: SampleSource | None) -> Workload:
    workload: Workload = trainer_module(config.model).workload(config, samples)
    return workload


WORKLOADS: dict[ModelKind, WorkloadFactory] = dict.fromkeys(KINDS, _workload)
"""Model kind → the factory of its workload (``stainless_training.kinds``)."""


def average_gradients(optimizers: Sequence[torch.optim.Optimizer], world: int) -> None:
    """Average, before every step of each optimiser, its gradients over the process group.

    Every worker runs the same passes, so the same parameters hold gradients at each
    step on every worker; they travel as one flat buffer per step.
    """

    def before_step(optimizer: torch.optim.Optimizer, *_: object) -> None:
        grads = [
            p.grad
            for group in optimizer.param_groups
            for p in group["params"]
            if p.grad is not None
        ]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat.div_(world)
        offset = 0
        for grad in grads:
            grad.copy_(flat[offset : offset + grad.numel()].view_as(grad))
            offset += grad.numel()

    for optimizer in optimizers:
        optimizer.register_step_pre_hook(before_step)


def broadcast_state(modules: Sequence[nn.Module]) -> None:
    """Make every worker's parameters and buffers those of rank 0."""
    for module in modules:
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)


@dataclass(frozen=True)
class _Run:
    """A worker's part of a run: the config, its workload, the config file of checkpoints."""

    config: TrainingConfig | DetectorTrainConfig
    work: Workload
    config_name: str
    config_text: str


def _worker_run(loop_config: dict[str, Any], rank: int) -> _Run:
    """The run ``loop_config`` carries: a translator's (``config``) or the detector's
    (``detector``), its workload built from the run's seed."""
    if "detector" in loop_config:
        from stainless_training.detector import (
            CONFIG_NAME,
            DetectorTrainConfig,
            DetectorWorkload,
            annotated_fields,
            dump_detector_config,
        )

        detector = DetectorTrainConfig.model_validate(loop_config["detector"])
        torch.manual_seed(detector.seed)
        annotated = annotated_fields(detector, _store(loop_config.get("store")))
        return _Run(
            detector,
            DetectorWorkload(detector, rank=rank, annotated=annotated),
            CONFIG_NAME,
            dump_detector_config(detector),
        )
    config = TrainingConfig.model_validate(loop_config["config"])
    torch.manual_seed(config.seed)
    samples = _sample_source(config, loop_config.get("store"))
    return _Run(
        config, WORKLOADS[config.model](config, samples), "config.yaml", dump_config(config)
    )


def worker_loop(loop_config: dict[str, Any]) -> None:
    """The function every Ray Train worker runs (``train_loop_per_worker``)."""
    import ray.train
    import ray.train.torch

    report_every = int(loop_config.get("report_every", 10))
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    if loop_config.get("pin_cores"):  # one core per worker (the scaling benchmark)
        torch.set_num_threads(1)
        cores = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cores[context.get_local_rank() % len(cores)]})
    run = _worker_run(loop_config, rank)
    config, work = run.config, run.work
    progress = (
        _progress_sink(loop_config.get("progress"), loop_config.get("progress_queue"))
        if rank == 0
        else None
    )
    device = ray.train.torch.get_device()
    work.to(device)
    step = 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            state = torch.load(Path(folder) / CHECKPOINT, weights_only=False, map_location=device)
            step = work.load(state)
    elif hasattr(work, "prepare"):  # a fresh run's set-up, e.g. model 2's U-Net pre-training
        work.prepare()
    if world > 1:
        broadcast_state([*work.modules, *getattr(work, "frozen", ())])
        average_gradients(work.optimizers, world)
    plan = batch_plan(work.labels, batch_size=work.batch_size, seed=config.seed)
    for _ in range(step * world):  # the batches of the steps already done
        next(plan)
    started, seen, first, logs = time.perf_counter(), 0, step, {}
    first_step_at: float | None = None
    while step < config.steps:
        mine = [next(plan)[1] for _ in range(world)][rank]
        with torch.autocast(device_type=device.type, enabled=device.type == "cuda"):
            logs = work.step(mine, step)
        step += 1
        if step == first + 1:
            first_step_at = time.time()
            started = time.perf_counter()  # the rate counts from the first step on
        else:
            seen += len(mine) * world
        if step % report_every and step % config.checkpoint_every and step != config.steps:
            continue
        elapsed = time.perf_counter() - started
        rate = seen / elapsed if seen else 0.0
        metrics = {"step": step, "samples_per_s": rate, "workers": world, **logs}
        if first_step_at is not None and "triggered_at" in loop_config:
            metrics["first_step_after_s"] = first_step_at - float(loop_config["triggered_at"])
        if progress is not None:
            eta = (config.steps - step) * elapsed / max(step - first - 1, 1)
            progress({**metrics, "steps": config.steps, "eta_s": round(eta, 1)})
        if step % config.checkpoint_every and step != config.steps:
            ray.train.report(metrics)
            continue
        with tempfile.TemporaryDirectory() as folder:
            saved = None
            if rank == 0:
                torch.save(work.state(step), Path(folder) / CHECKPOINT)
                (Path(folder) / run.config_name).write_text(run.config_text)
                saved = ray.train.Checkpoint.from_directory(folder)
            ray.train.report(metrics, checkpoint=saved)


def _sample_source(config: TrainingConfig, store: dict[str, Any] | None) -> SampleSource | None:
    """The snapshot's training cells when the config names one (phantom cells otherwise)."""
    if config.data.manifest is None:
        return None
    if store is None:
        raise ValueError("a run on a dataset snapshot needs the object store's settings")
    from stainless.core.config import StoreSettings
    from stainless_training.snapshot_data import snapshot_samples

    settings = StoreSettings.model_validate(store)
    key = config.data.manifest
    return lambda size: snapshot_samples(settings, key, size)


def _store(payload: dict[str, Any] | None) -> Any:
    """The object store of ``store_payload``'s settings, None without them."""
    if payload is None:
        return None
    from stainless.core.config import StoreSettings
    from stainless.core.storage import create_store

    return create_store(StoreSettings.model_validate(payload))


def _progress_sink(target: dict[str, str] | None, queue: Any = None) -> Progress | None:
    """Rank 0 writes the job's progress to its row, for the API and the CLI, and puts it
    on ``queue`` (a ``ray.util.queue.Queue``) for ``run_distributed``'s ``on_progress``."""
    sinks: list[Progress] = []
    if target is not None:
        from stainless.core.config import DatabaseSettings
        from stainless.core.db.engine import create_db_engine
        from stainless.stages.retraining.jobs import record_progress

        engine = create_db_engine(DatabaseSettings(url=target["database_url"]))
        job_id = target["job_id"]
        sinks.append(lambda values: record_progress(engine, job_id, values))
    if queue is not None:
        sinks.append(queue.put)
    if not sinks:
        return None

    def sink(values: dict[str, Any]) -> None:
        for each in sinks:
            each(values)

    return sink


def store_payload(settings: Any) -> dict[str, Any]:
    """Object-store settings as plain data for the workers (the secret included).

    A local store's folder is made absolute: workers do not share the caller's folder.
    """
    data: dict[str, Any] = settings.model_dump(mode="json")
    data["secret_key"] = settings.secret_key.get_secret_value()
    data["root"] = str(Path(settings.root).resolve())
    return data


def absolute_database_url(url: str) -> str:
    """``url`` with a relative SQLite path made absolute (for processes elsewhere)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return url
    if parsed.database == ":memory:":
        return url
    return parsed.set(database=str(Path(parsed.database).resolve())).render_as_string(
        hide_password=False
    )


@dataclass(frozen=True)
class Storage:
    """Where Ray keeps checkpoints: a local folder, or a bucket of an S3 server."""

    path: str
    endpoint: str | None = None
    access_key: str | None = None
    secret_key: str | None = None
    secure: bool = False

    def fetch(self, checkpoint: str, folder: Path) -> Path:
        """Copy a checkpoint folder of this storage (``RunResult.checkpoint``) to ``folder``."""
        from ray.train import Checkpoint

        return Path(Checkpoint(checkpoint, filesystem=self.filesystem()).to_directory(str(folder)))

    def filesystem(self) -> Any:
        if self.endpoint is None:
            return None
        from pyarrow import fs  # type: ignore[import-untyped]

        return fs.S3FileSystem(
            endpoint_override=self.endpoint,
            scheme="https" if self.secure else "http",
            access_key=self.access_key,
            secret_key=self.secret_key,
        )


def connect_ray(settings: Any, address: str | None = None) -> None:
    """Connect this process to Ray: ``address``, ``settings.ray.address``, ``RAY_ADDRESS``
    (set inside a Ray job), or else a local Ray with ``settings.ray.num_cpus`` CPUs."""
    import ray

    address = address or settings.ray.address
    existing = address or os.environ.get("RAY_ADDRESS")
    ray.init(
        address=address,
        num_cpus=None if existing else settings.ray.num_cpus,
        log_to_driver=False,
    )


def storage_for(settings: Any) -> Storage:
    """Ray's checkpoint storage from the settings: under the S3 bucket, or a local folder."""
    from stainless.core.config import StoreBackend

    store, prefix = settings.store, settings.ray.storage.strip("/")
    if store.backend is StoreBackend.S3:
        return Storage(
            path=f"{store.bucket}/{prefix}",
            endpoint=store.endpoint,
            access_key=store.access_key,
            secret_key=store.secret_key.get_secret_value(),
            secure=store.secure,
        )
    return Storage(path=str(Path(settings.ray.storage).resolve()))


@dataclass(frozen=True)
class RunResult:
    checkpoint: str  # folder of the last checkpoint in Ray's storage
    metrics: dict[str, Any]
    seconds: float
    failures: list[str] = field(default_factory=list)


def run_distributed(
    config: TrainingConfig | DetectorTrainConfig,
    *,
    name: str,
    storage: Storage,
    workers: int = 1,
    use_gpu: bool = False,
    max_failures: int = 2,
    report_every: int = 10,
    store: dict[str, Any] | None = None,
    progress: dict[str, str] | None = None,
    pin_cores: bool = False,
    on_progress: Progress | None = None,
) -> RunResult:
    """Train ``config`` on ``workers`` Ray workers (Ray must be initialised); block until done.

    ``config`` is a translator's ``TrainingConfig`` or the learned detector's
    ``DetectorTrainConfig``. A run of the same ``name`` in the same storage continues from
    its last checkpoint. ``store`` (:func:`store_payload`) lets workers read a dataset
    snapshot the config names; ``progress`` (``database_url``, ``job_id``) has rank 0
    record progress there; ``on_progress`` is called in this process (from a thread) with
    rank 0's progress (``step``, ``steps``, ``eta_s``, the step's logs) every
    ``report_every`` steps.
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    if not isinstance(config, TrainingConfig):
        run: dict[str, Any] = {"detector": config.model_dump(mode="json")}
    elif config.model in WORKLOADS:
        run = {"config": config.model_dump(mode="json")}
    else:
        raise ValueError(f"distributed training of {config.model} is not available")
    relay = _ProgressRelay(on_progress) if on_progress is not None else None
    trainer = TorchTrainer(
        worker_loop,
        train_loop_config={
            **run,
            "report_every": report_every,
            "store": store,
            "progress": progress,
            "progress_queue": None if relay is None else relay.queue,
            "pin_cores": pin_cores,
            "triggered_at": time.time(),
        },
        scaling_config=ScalingConfig(
            num_workers=workers, use_gpu=use_gpu, resources_per_worker={"CPU": 1}
        ),
        run_config=RunConfig(
            name=name,
            storage_path=storage.path,
            storage_filesystem=storage.filesystem(),
            failure_config=FailureConfig(max_failures=max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
    )
    started = time.perf_counter()
    try:
        result = trainer.fit()
    finally:
        if relay is not None:
            relay.close()
    if result.checkpoint is None:
        raise RuntimeError(f"run {name} ended without a checkpoint: {result.error}")
    return RunResult(
        checkpoint=result.checkpoint.path,
        metrics=dict(result.metrics or {}),
        seconds=time.perf_counter() - started,
    )


class _ProgressRelay:
    """Hands what rank 0 puts on a Ray queue to a callback of this process, from a thread."""

    def __init__(self, callback: Progress) -> None:
        from ray.util.queue import Queue

        # no CPU: a queue must not take a worker's place on a small cluster
        self.queue = Queue(actor_options={"num_cpus": 0})
        self.callback = callback
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._relay, name="ray-progress", daemon=True)
        self.thread.start()

    def _relay(self) -> None:
        from ray.util.queue import Empty

        while not self.done.is_set():
            try:
                values = self.queue.get(timeout=0.5)
            except Empty:
                continue
            self.callback(values)

    def close(self) -> None:
        """Hand on what is left, then stop the thread and the queue's actor."""
        self.done.set()
        self.thread.join()
        for values in self.queue.get_nowait_batch(self.queue.qsize()):
            self.callback(values)
        self.queue.shutdown()
