"""A fleet of scanners against the running stack (``make up``): throughput, latency, cost
and the bus's lag, and a check that no cell was lost or duplicated.

Each simulated scanner is registered as a scanner of its own and uploads its phantom
slides one after another through the raw route (``PUT …/fields/{index}/{modality}``),
all scanners at once. A report is due when the results API serves a slide's FHIR
DiagnosticReport after the slide completed; its latency is counted from the slide's last
upload (its ``complete`` call). Meanwhile every ``interval_s`` the CPU time and resident
memory of each service (its process and every child, from ``/proc``), the lag of each
consumer group (the topics' end offsets less the group's committed offsets) and the tasks
waiting in the Celery queue (the registration stage's real queue: its consumer hands each
field pair on as a task) are sampled.
The local broker (Tansu) gives a partition's end as the start of its last record batch
plus one, so where the relay sends several events in one batch the lag read here is a
lower bound.

Once every report is in, the database is asked what a loss or a duplicate would leave:
a field without its registration, a cell without a prediction, two cells of one field
with the same box.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import bindparam, text

from stainless.core.config import BusSettings, DatabaseSettings, TaskSettings
from stainless.core.db.engine import create_db_engine, session_scope
from stainless.core.events.contracts import ConsumerGroup
from stainless.core.storage.local import LocalObjectStore
from stainless.core.tasks import create_celery
from stainless.datasets.phantom import write_slide
from stainless.imaging.phantom_set import phantom_config
from stainless.stages.ingestion.scanners import register_scanner

Progress = Callable[[], None]

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


TASK_QUEUE = "celery tasks"  # the task queue's line beside the consumer groups


class FleetError(RuntimeError):
    """The stack is not there, or a slide did not come through in time."""


@dataclass(frozen=True)
class Stack:
    """What the benchmark needs of a running stack (from ``out/stack/stack.json``)."""

    ingestion_url: str
    results_url: str
    results_key: str
    database: DatabaseSettings
    bus: BusSettings
    pids: dict[str, int]
    replicas: int = 1
    task_broker_url: str | None = None  # the Celery broker (Redis) where tasks queue

    @classmethod
    def from_state(
        cls, state: Path = Path("out/stack"), servers: Path = Path("out/infra")
    ) -> Stack:
        """The stack whose services' state is in ``state``; the servers it uses (broker,
        object store, inference server) are sampled too where ``servers`` has their pids.

        Raises:
            FleetError: no stack is up there."""
        path = state / "stack.json"
        if not path.is_file():
            raise FleetError(f"no stack at {path}: start one with make up")
        config = json.loads(path.read_text())
        env = config["env"]
        pids = _live_pids(state)
        if not pids:
            raise FleetError(f"the stack at {state} is not running: start it with make up")
        pids |= {f"server:{name}": pid for name, pid in _live_pids(servers).items()}
        return cls(
            ingestion_url=config["urls"]["ingestion"],
            results_url=config["urls"]["results"],
            results_key=config["results_key"],
            database=DatabaseSettings(url=env["STAINLESS_DATABASE__URL"]),
            bus=BusSettings(
                bootstrap_servers=env["STAINLESS_BUS__BOOTSTRAP_SERVERS"],
                **(
                    {"topic_prefix": env["STAINLESS_BUS__TOPIC_PREFIX"]}
                    if "STAINLESS_BUS__TOPIC_PREFIX" in env
                    else {}
                ),
            ),
            pids=pids,
            replicas=int(config.get("replicas", 1)),
            task_broker_url=env.get("STAINLESS_TASKS__BROKER_URL"),
        )


def _live_pids(folder: Path) -> dict[str, int]:
    """Name -> pid of each ``<name>.pid`` in ``folder`` whose process is alive."""
    pids = {}
    for pid_file in sorted(folder.glob("*.pid")):
        pid = int(pid_file.read_text().split()[0])
        if Path(f"/proc/{pid}").exists():
            pids[pid_file.stem] = pid
    return pids


@dataclass
class _Slide:
    scanner: int
    slide_id: str
    fields: int
    uploaded_at: float
    reported_at: float | None = None


@dataclass
class _Samples:
    """What the sampler saw: time, per-service CPU seconds and RSS, per-group lag."""

    times: list[float] = field(default_factory=list)
    cpu_s: dict[str, list[float]] = field(default_factory=dict)
    rss_mb: dict[str, list[float]] = field(default_factory=dict)
    lag: dict[str, list[int]] = field(default_factory=dict)


def _tree(root: int) -> list[int]:
    """``root`` and all its descendants (from ``/proc/*/stat``)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _usage(root: int) -> tuple[float, float]:
    """CPU seconds (user + system) and resident MB of a process and its descendants."""
    cpu = rss = 0.0
    for pid in _tree(root):
        try:
            fields = (Path(f"/proc/{pid}/stat").read_text()).rsplit(")", 1)[1].split()
            pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue
        cpu += (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
        rss += pages * _PAGE / 2**20
    return cpu, rss


class _Sampler(threading.Thread):
    def __init__(self, stack: Stack, interval_s: float) -> None:
        super().__init__(name="fleet-sampler", daemon=True)
        self._stack = stack
        self._interval = interval_s
        self._done = threading.Event()
        self.samples = _Samples()
        self.failure: BaseException | None = None
        self._groups = [g.value for g in ConsumerGroup]

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # noqa: BLE001 - raised by stop(), in the caller's thread
            self.failure = exc

    def _run(self) -> None:
        from kafka import KafkaAdminClient, KafkaConsumer

        admin = KafkaAdminClient(bootstrap_servers=self._stack.bus.bootstrap_servers)
        consumer = KafkaConsumer(bootstrap_servers=self._stack.bus.bootstrap_servers)
        tasks = _TaskQueue(self._stack.task_broker_url) if self._stack.task_broker_url else None
        started = time.monotonic()
        try:
            while not self._done.is_set():
                self._sample(admin, consumer, tasks, time.monotonic() - started)
                self._done.wait(self._interval)
            self._sample(admin, consumer, tasks, time.monotonic() - started)
        finally:
            consumer.close()
            admin.close()
            if tasks is not None:
                tasks.close()

    def _sample(self, admin: Any, consumer: Any, tasks: _TaskQueue | None, at: float) -> None:
        samples = self.samples
        samples.times.append(at)
        for name, pid in self._stack.pids.items():
            cpu, rss = _usage(pid)
            samples.cpu_s.setdefault(name, []).append(cpu)
            samples.rss_mb.setdefault(name, []).append(rss)
        for group in self._groups:
            samples.lag.setdefault(group, []).append(_lag(admin, consumer, group))
        if tasks is not None:
            samples.lag.setdefault(TASK_QUEUE, []).append(tasks.waiting())

    def stop(self) -> _Samples:
        """The samples; raises FleetError if sampling failed (no figures without them)."""
        self._done.set()
        self.join(timeout=30)
        if self.failure is not None:
            raise FleetError(f"sampling the stack failed: {self.failure!r}") from self.failure
        return self.samples


class _TaskQueue:
    """The tasks waiting in the Celery app's default queue on its Redis broker."""

    def __init__(self, broker_url: str) -> None:
        import redis

        self._queue = create_celery(TaskSettings(broker_url=broker_url)).conf.task_default_queue
        self._redis = redis.Redis.from_url(broker_url)

    def waiting(self) -> int:
        return int(self._redis.llen(self._queue))

    def close(self) -> None:
        self._redis.close()


def _lag(admin: Any, consumer: Any, group: str) -> int:
    """Messages of the group's topics not yet committed by the group (0 if it has none)."""
    committed = admin.list_group_offsets(group).get(group) or {}
    if not committed:
        return 0
    ends = consumer.end_offsets(list(committed))
    return int(sum(max(ends[tp] - meta.offset, 0) for tp, meta in committed.items()))


def _phantom_fields(fields: int, seed: int, folder: Path) -> list[dict[str, bytes]]:
    """``fields`` phantom field pairs (DIC TIFF, BF PNG) as bytes."""
    store = LocalObjectStore(folder)
    entry = write_slide(
        store,
        prefix="",
        slide_index=0,
        fields=fields,
        seed=seed,
        config=phantom_config(width=1024, height=768),
    )
    return [{"DIC": store.get(f["dic"]), "BF": store.get(f["bf"])} for f in entry["fields"]]


def _upload(
    client: httpx.Client, scanner: int, number: int, pairs: list[dict[str, bytes]]
) -> _Slide:
    external = f"FLEET-{uuid.uuid4().hex[:8]}-{scanner}-{number}"
    opened = client.post("/v1/slides", json={"external_id": external, "patient_pseudonym": "F"})
    opened.raise_for_status()
    slide_id = str(opened.json()["id"])
    for index, pair in enumerate(pairs):
        for modality, data in pair.items():
            client.put(
                f"/v1/slides/{slide_id}/fields/{index}/{modality}",
                content=data,
                headers={
                    "X-Content-SHA256": hashlib.sha256(data).hexdigest(),
                    "Idempotency-Key": f"{external}-{index}-{modality}",
                },
            ).raise_for_status()
    client.post(f"/v1/slides/{slide_id}/complete").raise_for_status()
    return _Slide(scanner, slide_id, len(pairs), time.monotonic())


def _await_reports(
    stack: Stack, slides: list[_Slide], timeout_s: float, on_step: Progress | None
) -> None:
    """Poll the results API until every slide's FHIR report is served after completion."""
    deadline = time.monotonic() + timeout_s
    headers = {"X-API-Key": stack.results_key}
    with httpx.Client(base_url=stack.results_url, headers=headers, timeout=30) as client:
        while (waiting := [s for s in slides if s.reported_at is None]) and (
            time.monotonic() < deadline
        ):
            for slide in waiting:
                summary = client.get(f"/v1/slides/{slide.slide_id}")
                if summary.is_success and summary.json().get("status") in ("completed", "signed"):
                    report = client.get(f"/v1/slides/{slide.slide_id}/fhir")
                    if report.is_success:
                        slide.reported_at = time.monotonic()
                        if on_step:
                            on_step()
            time.sleep(0.25)
    late = [s.slide_id for s in slides if s.reported_at is None]
    if late:
        raise FleetError(f"{len(late)} slides had no report within {timeout_s:.0f} s: {late}")


_COUNTS = {
    "cells": "SELECT count(*) FROM cell WHERE slide_id IN :slides",
    "fields_without_registration": """
        SELECT count(*) FROM (SELECT DISTINCT f.slide_id, f.index FROM field f
          LEFT JOIN registration r ON r.slide_id = f.slide_id AND r.field_index = f.index
          WHERE f.slide_id IN :slides AND r.id IS NULL) AS missing""",
    "cells_without_prediction": """
        SELECT count(*) FROM cell c WHERE c.slide_id IN :slides AND NOT EXISTS
          (SELECT 1 FROM prediction p WHERE p.cell_id = c.id)""",
    # A field processed twice would add its cells again under new indices (the database's
    # unique keys stop the same index, a second registration or prediction, outright).
    "duplicated_cells": """
        SELECT coalesce(sum(n - 1), 0) FROM (SELECT count(*) AS n FROM cell
          WHERE slide_id IN :slides GROUP BY slide_id, field_index, x0, y0, x1, y1
          HAVING count(*) > 1) AS doubled""",
}


def _losses(stack: Stack, slides: list[_Slide]) -> dict[str, int]:
    """The fleet's cells, and what a lost or duplicated record would leave, counted over
    the fleet's slides."""
    ids = [s.slide_id for s in slides]
    engine = create_db_engine(stack.database)
    try:
        with engine.connect() as connection:
            counts = {
                name: int(
                    connection.execute(
                        text(query).bindparams(bindparam("slides", expanding=True)),
                        {"slides": ids},
                    ).scalar_one()
                )
                for name, query in _COUNTS.items()
            }
    finally:
        engine.dispose()
    return counts


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _plot_lag(samples: _Samples, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 4))
    for group, lags in samples.lag.items():
        if any(lags):
            axes.plot(samples.times, lags, label=group)
    axes.set_xlabel("seconds since the first upload")
    axes.set_ylabel("messages not yet committed, tasks waiting")
    axes.set_title("Consumer lag per group, and the Celery queue")
    axes.legend(loc="upper right", fontsize="small")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _by_service(samples: _Samples) -> dict[str, dict[str, float]]:
    """Each service's CPU seconds, share of one core and peak memory over the run, the
    replicas of a stage (``registration``, ``registration-2``, …) added together."""
    services: dict[str, dict[str, float]] = {}
    for name, cpu in samples.cpu_s.items():
        service = re.sub(r"-\d+$", "", name)
        figures = services.setdefault(
            service, {"processes": 0, "cpu_s": 0.0, "cpu_share": 0.0, "peak_rss_mb": 0.0}
        )
        figures["processes"] += 1
        figures["cpu_s"] += cpu[-1] - cpu[0]
        figures["peak_rss_mb"] += max(samples.rss_mb[name])
    for figures in services.values():
        figures["cpu_share"] = round(figures["cpu_s"] / max(samples.times[-1], 1e-9), 3)
        figures["cpu_s"] = round(figures["cpu_s"], 2)
        figures["peak_rss_mb"] = round(figures["peak_rss_mb"], 1)
    return services


def run_fleet_bench(
    stack: Stack,
    *,
    scanners: int = 3,
    slides: int = 2,
    fields: int = 2,
    seed: int = 0,
    interval_s: float = 0.5,
    timeout_s: float = 600.0,
    plot: Path | None = None,
    on_step: Progress | None = None,
) -> dict[str, Any]:
    """``scanners`` scanners upload ``slides`` slides of ``fields`` field pairs each, at
    once; the figures, the samples' summary and the loss and duplicate counts."""
    engine = create_db_engine(stack.database)
    try:
        with session_scope(engine) as session:
            keys = [
                register_scanner(session, name=f"fleet-{uuid.uuid4().hex[:8]}")[1]
                for _ in range(scanners)
            ]
    finally:
        engine.dispose()
    with tempfile.TemporaryDirectory() as tmp:
        pairs = _phantom_fields(fields, seed, Path(tmp))
    sampler = _Sampler(stack, interval_s)
    sampler.start()
    started = time.monotonic()

    def scan(scanner: int) -> list[_Slide]:
        headers = {"X-API-Key": keys[scanner]}
        with httpx.Client(base_url=stack.ingestion_url, headers=headers, timeout=120) as client:
            done = []
            for number in range(slides):
                done.append(_upload(client, scanner, number, pairs))
                if on_step:
                    on_step()
            return done

    try:
        with ThreadPoolExecutor(scanners) as pool:
            sent = [s for batch in pool.map(scan, range(scanners)) for s in batch]
        uploaded_s = time.monotonic() - started
        _await_reports(stack, sent, timeout_s, on_step)
    finally:
        samples = sampler.stop()
    elapsed = max(s.reported_at or 0.0 for s in sent) - started
    latencies = [(s.reported_at or 0.0) - s.uploaded_at for s in sent]
    losses = _losses(stack, sent)
    if plot is not None:
        _plot_lag(samples, plot)
    return {
        "scanners": scanners,
        "slides": len(sent),
        "field_pairs": sum(s.fields for s in sent),
        "consumers_per_stage": stack.replicas,
        "uploaded_s": round(uploaded_s, 2),
        "elapsed_s": round(elapsed, 2),
        "slides_per_hour": round(len(sent) / elapsed * 3600, 1),
        "report_latency_p50_s": round(statistics.median(latencies), 2),
        "report_latency_p95_s": round(_percentile(latencies, 0.95), 2),
        "services": _by_service(samples),
        "peak_lag": {group: max(lags) for group, lags in samples.lag.items()},
        "lost": sum(losses[k] for k in ("fields_without_registration", "cells_without_prediction")),
        "duplicated": losses["duplicated_cells"],
        "checks": losses,
        "lag_plot": None if plot is None else str(plot),
    }
