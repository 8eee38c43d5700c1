"""Shared fixtures. Servers are real, on loopback, started and stopped by PID here.

Postgres and Redis are the machine's own (checked, started if down); the Kafka
broker, the S3 server and the v2 (Triton protocol) inference server are started from
``infra/servers.py`` on free ports for the test session.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import servers as infra

from .support.oidc_provider import Provider

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _clean_stainless_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests start from default settings whatever the caller's environment holds."""
    for key in list(os.environ):
        if key.upper().startswith("STAINLESS_"):
            monkeypatch.delenv(key)


@pytest.fixture(scope="session")
def infra_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("infra")


@pytest.fixture(scope="session")
def new_postgres_database() -> Iterator[Callable[[], str]]:
    """Creates fresh, empty Postgres databases on demand; drops them all at the end."""
    import psycopg

    infra.ensure_postgres()
    admin = "postgresql://postgres@127.0.0.1:5432/test"
    created: list[str] = []

    def create() -> str:
        name = f"stainless_test_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"

    yield create
    with psycopg.connect(admin, autocommit=True) as connection:
        for name in created:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def postgres_url(new_postgres_database: Callable[[], str]) -> str:
    """An empty Postgres database for one test module."""
    return new_postgres_database()


@pytest.fixture(scope="session")
def kafka_bootstrap(infra_state: Path) -> Iterator[str]:
    server = infra.start_kafka(infra.free_port(), infra_state)
    yield server.address
    infra.stop("kafka", infra_state)


@pytest.fixture(scope="session")
def s3_endpoint(infra_state: Path) -> Iterator[str]:
    server = infra.start_s3(infra.free_port(), infra_state)
    yield server.address
    infra.stop("s3", infra_state)


@pytest.fixture
def oidc_provider() -> Iterator[Provider]:
    """A running OpenID Connect provider on loopback (tests/support/oidc_provider.py)."""
    provider = Provider().start()
    yield provider
    provider.stop()


@pytest.fixture
def unused_port() -> int:
    return int(infra.free_port())


@pytest.fixture
def free_port() -> Callable[[], int]:
    """Hands out free loopback ports, one per call."""
    return lambda: int(infra.free_port())


@pytest.fixture(scope="session")
def redis_url() -> str:
    infra.ensure_redis()
    return "redis://127.0.0.1:6379"


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A migrated SQLite database (the embedded default) in a temp folder."""
    from stainless.core.db.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'stainless.db'}"
    upgrade(url)
    return url


def export_tiny(repo: Path, instance: str) -> Path:
    """A tiny random model (the four served heads, with its manifest) and tiny random learned
    detectors of both modalities, exported into ``repo`` for ``instance``."""
    import torch

    from stainless.domain.cells import CellClass
    from stainless.ml.export.detector import write_detector
    from stainless.ml.export.triton import InstanceKind, write_repository
    from stainless.ml.models.configs import MultiTaskConfig
    from stainless.ml.models.detector import (
        CHECKPOINT_FORMAT,
        DetectorConfig,
        Modality,
        build_cell_net,
    )
    from stainless.ml.models.mtmd import build_multitask

    kind = InstanceKind(instance)
    config = MultiTaskConfig.tiny()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        translator = build_multitask(config).eval()
    write_repository(
        translator,
        repo,
        name="mtmd-tiny",
        image_size=config.image_size,
        classes=[c.value for c in CellClass],
        n_mask_classes=config.n_segmentation_classes,
        review_threshold=0.5,
        k=6,
        instance=kind,
    )
    for modality in Modality:  # tiny random learned detectors beside it
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            detector = DetectorConfig(modality=modality, width=4)
            net = build_cell_net(detector)
        checkpoint = repo.parent / f"{repo.name}-detector-{modality}.pt"
        torch.save(
            {
                "format": CHECKPOINT_FORMAT,
                "state_dict": net.state_dict(),
                "config": detector.to_dict(),
            },
            checkpoint,
        )
        write_detector(checkpoint, repo, instance=kind, threshold=0.0)
    return repo


def export_tiny_disentangled(repo: Path, instance: str) -> Path:
    """A random tiny model 2 (seed 0) served with a random tiny model 1 (seed 1) as its
    classifier, exported into ``repo`` for ``instance`` (k = 6 to keep tests quick)."""
    import torch

    from stainless.domain.cells import CellClass
    from stainless.ml.export.disentangled_heads import write_disentangled_repository
    from stainless.ml.export.triton import InstanceKind
    from stainless.ml.models.configs import DisentangledConfig, MultiTaskConfig
    from stainless.ml.models.disentangled import build_disentangled
    from stainless.ml.models.mtmd import build_multitask

    config = DisentangledConfig.tiny()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model_2 = build_disentangled(config).eval()
        torch.manual_seed(1)
        model_1 = build_multitask(MultiTaskConfig.tiny()).eval()
    write_disentangled_repository(
        model_2,
        model_1,
        repo,
        name="disentangled-tiny",
        classifier_name="mtmd-tiny",
        image_size=config.image_size,
        classes=[c.value for c in CellClass],
        review_threshold=0.5,
        k=6,
        instance=InstanceKind(instance),
    )
    return repo


@pytest.fixture(scope="session")
def disentangled_python_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Model 2 with its classifier for Triton's python backend."""
    return export_tiny_disentangled(
        tmp_path_factory.mktemp("disentangled-repository"), "cpu-python"
    )


@pytest.fixture(scope="session")
def tiny_export() -> Callable[[Path, str], Path]:
    """:func:`export_tiny`, for tests that export for several instance kinds."""
    return export_tiny


@pytest.fixture(scope="session")
def exported_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model and detectors for CPU instances of Triton's native backends."""
    return export_tiny(tmp_path_factory.mktemp("model-repository"), "cpu")


@pytest.fixture(scope="session")
def exported_python_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same for Triton's python backend (the Triton server these tests run)."""
    return export_tiny(tmp_path_factory.mktemp("python-repository"), "cpu-python")


@dataclass
class TritonServer:
    """The real Triton server over a repository, on fixed ports so it can be restarted."""

    repository: Path
    state: Path
    http_port: int
    grpc_port: int
    metrics_port: int
    startup_s: list[float] = field(default_factory=list)

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    def start(self) -> None:
        began = time.monotonic()
        try:
            infra.start_triton(
                self.repository,
                http_port=self.http_port,
                grpc_port=self.grpc_port,
                metrics_port=self.metrics_port,
                state=self.state,
                seed=0,  # noise seeded per request, as the in-process adapter seeds it
            )
        except infra.InfraError as exc:
            pytest.fail(f"the Triton server did not start: {exc}", pytrace=False)
        self.startup_s.append(time.monotonic() - began)

    def stop(self) -> None:
        infra.stop("inference", self.state)

    @property
    def running(self) -> bool:
        return bool((self.state / "inference.pid").is_file())


def _serve_with_triton(repository: Path, state: Path) -> TritonServer:
    """A started real Triton server over ``repository``, on free ports, its files in ``state``."""
    ports: set[int] = set()
    while len(ports) < 3:
        ports.add(infra.free_port())
    http_port, grpc_port, metrics_port = sorted(ports)
    server = TritonServer(repository, state, http_port, grpc_port, metrics_port)
    server.start()
    return server


@pytest.fixture
def own_triton(tmp_path: Path) -> Iterator[Callable[[Path], TritonServer]]:
    """Starts a real Triton server of the test's own over a repository; stops it after."""
    started: list[TritonServer] = []

    def start(repository: Path) -> TritonServer:
        state = tmp_path / f"triton-{len(started)}"
        state.mkdir()
        started.append(_serve_with_triton(repository, state))
        return started[-1]

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def triton_server(exported_python_repo: Path, infra_state: Path) -> Iterator[TritonServer]:
    """The real Triton server (python backend, CPU) serving ``exported_python_repo``."""
    server = _serve_with_triton(exported_python_repo, infra_state)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def disentangled_triton(
    disentangled_python_repo: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TritonServer]:
    """A second real Triton server, serving model 2 (``disentangled_python_repo``)."""
    server = _serve_with_triton(disentangled_python_repo, tmp_path_factory.mktemp("triton-m2"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def ray_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A local Ray cluster (head with 2 CPUs) started for the session; the driver connects."""
    import subprocess

    import ray

    port = infra.free_port()
    ray_bin = Path(sys.executable).parent / "ray"
    # A loopback-only test cluster: no token (the driver and the workers share this machine).
    os.environ["RAY_AUTH_MODE"] = "disabled"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    started = subprocess.run(
        [
            str(ray_bin),
            "start",
            "--head",
            "--node-ip-address=127.0.0.1",
            f"--port={port}",
            # Workers bind ports the kernel assigns: Ray's default worker range (10002-19999)
            # overlaps the ports infra.free_port hands out, and Ray refuses a head port in it.
            "--min-worker-port=0",
            "--max-worker-port=0",
            "--num-cpus=2",
            "--include-dashboard=false",
            "--disable-usage-stats",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    if started.returncode != 0:
        raise RuntimeError(f"ray start failed ({started.returncode}): {started.stderr[-2000:]}")
    address = f"127.0.0.1:{port}"
    ray.init(address=address, log_to_driver=False)
    yield address
    ray.shutdown()
    subprocess.run([str(ray_bin), "stop", "--force"], env=env, capture_output=True, timeout=120)
