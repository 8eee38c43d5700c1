"""Every Stainless service as its own process against real servers: ``make up`` / ``make down``.

``up`` starts the local servers (``servers.py``: Postgres and Redis checked, the Kafka
broker, the S3 server and the Triton server over ``out/models``, exported afresh from the
demo model (``--instance cpu-python``) with the learned detectors the registration stage
runs on it), migrates a new ``stainless`` database (the S3 server and the broker keep
nothing between runs, so neither does the stack), registers the demo model as the version
served, a scanner and an admin key, then starts the ingestion API, the outbox relay, the
registration consumer, a Celery worker, the inference consumer (Triton adapter, gRPC) and
the results API, each with its log and PID under ``out/stack``. ``--replicas N`` starts N
processes of each stage that consumes work (the relay, the registration consumer, the
worker, the inference consumer), as KEDA would scale them: the second of a stage is named
``<stage>-2`` and listens on its stage's port plus 100. The S3 server checks IAM:
each service has its own user holding only its workload's policy (``store_identities.py``).
The settings and keys of the stack are written to ``out/stack/stack.json`` for ``infra/e2e.py``, for
people, and for the ``stainless`` commands run here (``cli_env``).

Usage: ``python infra/stack.py up [--replicas N] | down | status`` with the project's
virtual environment.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import servers

ROOT = servers.ROOT
STATE = Path("out/stack")
INFRA_STATE = servers.DEFAULT_STATE
REPOSITORY = Path("out/models")
DEMO_CHECKPOINT = ROOT / "training/demo_model/checkpoint.pt"
DETECTOR_CHECKPOINTS = ROOT / "training/detector_model"
LEARNED_DETECTORS = {"bf": "wbc_detector_bf", "dic": "wbc_detector_dic"}  # as the demo
DATABASE = "stainless"
BIN = Path(sys.executable).parent

PORTS = {"ingestion": 8080, "registration": 8081, "inference": 8082, "results": 8083}
PORTS |= {"relay": 8090, "worker": 8091}
SERVICES: dict[str, list[str]] = {
    "ingestion": [str(BIN / "stainless-ingestion")],
    "relay": [str(BIN / "stainless-relay")],
    "registration": [str(BIN / "stainless-registration")],
    "worker": [
        str(BIN / "celery"),
        "-A",
        "stainless_worker.main",
        "worker",
        "--pool=solo",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ],
    "inference": [str(BIN / "stainless-inference")],
    "results": [str(BIN / "stainless-results")],
}
HEALTH = {"ingestion", "registration", "inference", "results", "relay"}
SCALED = ("relay", "registration", "worker", "inference")  # the stages that consume work
PORT_SETTINGS = {
    name: f"STAINLESS_{name.upper()}__HTTP_PORT"
    for name in ("ingestion", "registration", "inference", "results", "relay")
} | {"worker": "STAINLESS_WORKER__METRICS_PORT"}
BUCKET = "stainless"


def environment() -> dict[str, str]:
    """The settings every service of the stack shares."""
    return {
        "STAINLESS_DATABASE__URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{DATABASE}",
        "STAINLESS_STORE__BACKEND": "s3",
        "STAINLESS_STORE__ENDPOINT": "127.0.0.1:9000",
        "STAINLESS_STORE__BUCKET": BUCKET,
        "STAINLESS_STORE__CREATE_BUCKET": "false",
        "STAINLESS_BUS__BACKEND": "kafka",
        "STAINLESS_BUS__BOOTSTRAP_SERVERS": "127.0.0.1:9092",
        "STAINLESS_BUS__SESSION_TIMEOUT_MS": "6000",
        "STAINLESS_BUS__HEARTBEAT_INTERVAL_MS": "1000",
        "STAINLESS_TASKS__EAGER": "false",
        "STAINLESS_TASKS__BROKER_URL": "redis://127.0.0.1:6379/2",
        "STAINLESS_TASKS__RESULT_BACKEND": "redis://127.0.0.1:6379/3",
        "STAINLESS_INFERENCE__BACKEND": "triton",
        "STAINLESS_INFERENCE__URL": f"127.0.0.1:{servers.INFERENCE_GRPC_PORT}",
        "STAINLESS_INFERENCE__PROTOCOL": "grpc",
        "STAINLESS_INFERENCE__MODEL_REPOSITORY": str(REPOSITORY),
        "STAINLESS_INFERENCE__RETRY_MAX_BACKOFF_S": "4",
        "STAINLESS_REGISTRATION__DETECTOR__BRIGHTFIELD": "learned",
        "STAINLESS_REGISTRATION__DETECTOR__DIC": "learned",
        "STAINLESS_REGISTRATION__DETECTOR__BACKEND": "triton",
        "STAINLESS_REGISTRATION__DETECTOR__URL": f"127.0.0.1:{servers.INFERENCE_GRPC_PORT}",
        "STAINLESS_REGISTRATION__DETECTOR__PROTOCOL": "grpc",
        "STAINLESS_REGISTRATION__DETECTOR__MODEL_REPOSITORY": str(REPOSITORY),
        "STAINLESS_RELAY__POLL_INTERVAL_S": "0.2",
    } | {setting: str(PORTS[name]) for name, setting in PORT_SETTINGS.items()}


def processes(replicas: int) -> dict[str, tuple[str, int]]:
    """Each process of the stack: its name -> (its service, its port); ``replicas`` of
    every stage in ``SCALED``, one of every other service."""
    found = {}
    for service in SERVICES:
        for index in range(1, (replicas if service in SCALED else 1) + 1):
            name = service if index == 1 else f"{service}-{index}"
            found[name] = (service, PORTS[service] + 100 * (index - 1))
    return found


def service_env(config: dict[str, Any], name: str, port: int | None = None) -> dict[str, str]:
    """The settings of one service of the stack: the shared ones, its own S3 identity and,
    for a replica, its own port."""
    key = config["store_identities"].get(name)
    own = {PORT_SETTINGS[name]: str(port)} if port is not None else {}
    if key:
        own |= {
            "STAINLESS_STORE__ACCESS_KEY": key["AccessKeyId"],
            "STAINLESS_STORE__SECRET_KEY": key["SecretAccessKey"],
        }
    return {**config["env"], **own}


def _store_identities(env: dict[str, str]) -> dict[str, dict[str, str]]:
    """The bucket, made by the S3 server's admin, and a user per service holding only its
    workload's policy (``stainless store policies``), as the chart gives each workload."""
    import store_identities

    admin = json.loads((INFRA_STATE / servers.S3_ADMIN).read_text())
    endpoint = env["STAINLESS_STORE__ENDPOINT"]
    store_identities.ensure_bucket(endpoint, admin, BUCKET)
    policies = json.loads(run_command([str(BIN / "stainless"), "store", "policies"], env))
    workloads = {name: name for name in SERVICES if name in policies}
    keys = store_identities.create_identities(
        endpoint, admin, {w: policies[w] for w in workloads.values()}, suffix=str(time.time_ns())
    )
    return {name: keys[workload] for name, workload in workloads.items()}


def operator_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` with the S3 server's admin key, as an operator runs the model commands."""
    admin = json.loads((INFRA_STATE / servers.S3_ADMIN).read_text())
    return {
        **env,
        "STAINLESS_STORE__ACCESS_KEY": admin["AccessKeyId"],
        "STAINLESS_STORE__SECRET_KEY": admin["SecretAccessKey"],
    }


def _register_demo_model(env: dict[str, str]) -> None:
    """Register the exported demo model as the version served (``stainless models register
    --served``), so that promotions are compared with it and a rollback returns to it."""
    if json.loads((REPOSITORY / "stainless.json").read_text()).get("model_version_id"):
        return
    name = run_command(
        [str(BIN / "stainless"), "models", "register", str(DEMO_CHECKPOINT), "--served"],
        operator_env(env),
    )
    print(f"the demo model is registered as {name}")


def run_command(command: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise servers.InfraError(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return done.stdout.strip()


def _fresh_database() -> None:
    """An empty ``stainless`` database (the stack's S3 server and broker keep nothing
    between runs, so a database kept would name models and images that are gone)."""
    psql = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-tAc"]
    run_command([*psql, f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"], dict(os.environ))
    run_command([*psql, f"CREATE DATABASE {DATABASE}"], dict(os.environ))


def _live(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/live", timeout=1):
            return True
    except OSError:
        return False


def _on_triton(model: str) -> bool:
    """Whether the repository holds ``model`` for this machine's Triton (python backend)."""
    version = servers.served_models(REPOSITORY).get(model)
    return version is not None and (REPOSITORY / model / str(version) / "model.py").is_file()


def up(replicas: int = 1) -> dict[str, str]:
    STATE.mkdir(parents=True, exist_ok=True)
    config_path = STATE / "stack.json"
    if config_path.is_file() and all((STATE / f"{name}.pid").is_file() for name in SERVICES):
        running = json.loads(config_path.read_text())
        if running.get("replicas", 1) != replicas:
            raise servers.InfraError(
                f"the stack is up with {running.get('replicas', 1)} process(es) per stage:"
                " make down first"
            )
        print(f"stack: already up ({config_path})")
        return dict(running["env"])
    base = {k: v for k, v in os.environ.items() if not k.startswith("STAINLESS_")}
    # A stack starts from nothing: the model repository too is exported again.
    shutil.rmtree(REPOSITORY, ignore_errors=True)
    if not ((REPOSITORY / "stainless.json").is_file() and _on_triton("stain_confidence")):
        print(f"exporting the demo model into {REPOSITORY}")
        run_command(
            [
                str(BIN / "stainless"),
                "export",
                "--checkpoint",
                str(DEMO_CHECKPOINT),
                "--repo",
                str(REPOSITORY),
                "--instance",
                "cpu-python",
            ],
            base,
        )
    for modality, name in LEARNED_DETECTORS.items():
        if not ((REPOSITORY / name / "detector.json").is_file() and _on_triton(name)):
            print(f"exporting the learned {modality} detector into {REPOSITORY}")
            checkpoint = DETECTOR_CHECKPOINTS / f"{modality}.pt"
            run_command(
                [
                    *(str(BIN / "stainless"), "export-detector", "--checkpoint", str(checkpoint)),
                    *("--repo", str(REPOSITORY), "--instance", "cpu-python"),
                ],
                base,
            )
    infra = ["up", "--state", str(INFRA_STATE), "--model-repository", str(REPOSITORY), "--s3-iam"]
    if servers.main(infra):
        raise servers.InfraError("the local servers did not start (see above)")
    _fresh_database()
    env = {**base, **environment()}
    run_command([str(BIN / "stainless"), "db", "upgrade"], env)
    admin = f"stack-admin-{time.time_ns()}"
    results_key = run_command(
        [str(BIN / "stainless"), "keys", "create", admin, "--role", "admin", "--days", "30"], env
    )
    scanner_key = run_command(
        [str(BIN / "stainless"), "scanner", "add", f"stack-{time.time_ns()}"], env
    )
    identities = _store_identities(env)
    _register_demo_model(env)
    config: dict[str, Any] = {
        "env": environment(),
        "cli_env": operator_env(environment()),  # what `stainless …` run here uses
        "store_identities": identities,
        "scanner_key": scanner_key,
        "results_key": results_key,
        "urls": {name: f"http://127.0.0.1:{PORTS[name]}" for name in ("ingestion", "results")},
        "replicas": replicas,
    }
    for name, (service, port) in processes(replicas).items():
        command = SERVICES[service]
        if service == "worker":  # each Celery worker its own node name
            command = [*command, f"--hostname={name}@%h"]
        env = {**base, **service_env(config, service, port)}
        pid = servers.spawn(name, command, STATE, env=env)
        print(f"{name}: pid {pid}, port {port}")
    for name, (service, port) in sorted(processes(replicas).items()):
        if service in HEALTH:
            servers.wait_until(lambda port=port: _live(port), f"the {name} service", 90)
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    print(f"stack: up; review page {config['urls']['results']}/ (key in {config_path})")
    return env


def down() -> None:
    for name in reversed(list(SERVICES)):
        print(f"{name}: {'stopped' if servers.stop(name, STATE) else 'not running'}")
        for replica in sorted(STATE.glob(f"{name}-*.pid")):
            servers.stop(replica.stem, STATE)
            print(f"{replica.stem}: stopped")
    (STATE / "stack.json").unlink(missing_ok=True)
    servers.main(["down", "--state", str(INFRA_STATE)])


def status() -> None:
    for name, state in servers.status(STATE).items():
        print(f"{name}: {state}")
    servers.main(["status", "--state", str(INFRA_STATE)])


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="make up / make down: the stack's processes")
    parser.add_argument("command", nargs="?", default="status", choices=("up", "down", "status"))
    parser.add_argument(
        "--replicas", type=int, default=1, help="processes of each stage that consumes work"
    )
    args = parser.parse_args(argv)
    if args.replicas < 1:
        parser.error("--replicas must be at least 1")
    try:
        if args.command == "up":
            up(args.replicas)
        elif args.command == "down":
            down()
        else:
            status()
    except servers.InfraError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
