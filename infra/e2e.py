"""End to end against the running stack (``make up``): phantom slides from upload to report.

Uploads a phantom slide over HTTP to the ingestion API, completes it, and waits for its
``slides.completed`` event on the Kafka broker; then checks the results API (slide
completed, one prediction per cell, a valid FHIR report). A scenario disturbs the stack
in the middle of the slide; each must still end with every slide completed exactly once
and every cell predicted exactly once:

- ``inference-outage`` (``--fault``): the inference server is stopped right after the
  upload and started again a few seconds later;
- ``kill``: the registration consumer, the Celery worker, the outbox relay and the
  inference consumer are each killed with SIGKILL mid-slide and started again;
- ``pause-broker`` / ``pause-store``: the Kafka broker / the S3 server stops answering
  for ten seconds (SIGSTOP, then SIGCONT: unreachable, its data kept);
- ``scanners``: three scanners upload a slide each at the same time;
- ``promotion``: a model version is registered and promoted (``stainless promote``) while
  a slide is being stained; two slides follow once the inference service has switched.
  The first slide carries the version served before the promotion, the later ones the
  promoted version, and no process of the stack was restarted.
- ``notify``: the report notifier (``stainless-notifier``) runs against a laboratory
  endpoint on loopback that refuses every notification: the slide's report is retried,
  then dead-lettered with the cause; the endpoint is mended, ``stainless dlq replay``
  puts the event back, and the report arrives exactly once.

Usage: ``python infra/e2e.py [--scenario NAME] [--fields N]``; exit code 0 when every
check holds.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import servers
import stack
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from kafka import KafkaConsumer
from sqlalchemy import create_engine, text

from stainless.core.config import BusBackend, BusSettings, StoreBackend, StoreSettings
from stainless.core.events import SlideCompleted, Topic, create_bus, decode_envelope
from stainless.core.events.dead_letters import Letter, read_letters
from stainless.core.inference.manifest import read_manifest
from stainless.core.registry import registered
from stainless.core.storage import create_store
from stainless.core.storage.local import LocalObjectStore
from stainless.datasets.phantom import write_slide
from stainless.imaging.phantom_set import phantom_config


class CheckFailed(AssertionError):
    pass


def check(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)
    print(f"  ok: {message}")


def upload(
    client: httpx.Client,
    fields: int,
    seed: int,
    between: Callable[[str, int], None] | None = None,
) -> tuple[str, int]:
    """A phantom slide over HTTP, each field as the raw body of ``PUT …/fields/{index}/{modality}``
    (the form route is the demo's); returns the slide id and its fields. ``between`` is
    called with the slide id and the number of fields sent after each field but the last."""
    with tempfile.TemporaryDirectory() as tmp:
        phantom = LocalObjectStore(Path(tmp))
        entry = write_slide(
            phantom,
            prefix="",
            slide_index=0,
            fields=fields,
            seed=seed,
            config=phantom_config(width=1024, height=768),
        )
        external = f"E2E-{uuid.uuid4().hex[:8]}"
        opened = client.post("/v1/slides", json={"external_id": external, "patient_pseudonym": "P"})
        opened.raise_for_status()
        slide_id = str(opened.json()["id"])
        for sent, field in enumerate(entry["fields"], start=1):
            for modality, key in (("DIC", field["dic"]), ("BF", field["bf"])):
                data = phantom.get(key)
                client.put(
                    f"/v1/slides/{slide_id}/fields/{field['index']}/{modality}",
                    content=data,
                    headers={"X-Content-SHA256": hashlib.sha256(data).hexdigest()},
                ).raise_for_status()
            if between is not None and sent < len(entry["fields"]):
                between(slide_id, sent)
    client.post(f"/v1/slides/{slide_id}/complete").raise_for_status()
    return slide_id, len(entry["fields"])


def completions(
    consumer: KafkaConsumer, slide_ids: set[str], timeout_s: float
) -> list[SlideCompleted]:
    """Every ``slides.completed`` event of the slides seen within ``timeout_s``."""
    found: list[SlideCompleted] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            for record in records:
                envelope = decode_envelope(record.value, topic=Topic.SLIDES_COMPLETED)
                event = envelope.parsed(SlideCompleted)
                if event.slide_id in slide_ids:
                    found.append(event)
        if {event.slide_id for event in found} == slide_ids:
            # Stay a little longer: a second completion would be a bug.
            deadline = min(deadline, time.monotonic() + 3)
    return found


def unavailable_count() -> dict[str, float]:
    """How often the pipeline found the inference server unavailable (the metrics of the
    inference consumer, and of the worker running the learned detector)."""
    counts = {"inference": 0.0, "detection": 0.0}
    for stage, service, metric in (
        ("inference", "inference", "stainless_inference_unavailable_total"),
        ("detection", "worker", "stainless_detector_unavailable_total"),
    ):
        url = f"http://127.0.0.1:{stack.PORTS[service]}/metrics"
        for line in httpx.get(url, timeout=10).text.splitlines():
            if line.startswith(metric):
                counts[stage] += float(line.split()[-1])
    return counts


def _restart(config: dict[str, Any], name: str) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("STAINLESS_")}
    servers.spawn(
        name, stack.SERVICES[name], stack.STATE, env={**base, **stack.service_env(config, name)}
    )


def _kill_each(config: dict[str, Any]) -> None:
    for name in ("registration", "worker", "relay", "inference"):
        time.sleep(1.5)
        pid = int((stack.STATE / f"{name}.pid").read_text().split()[0])
        os.killpg(pid, signal.SIGKILL)
        print(f"  {name} killed (SIGKILL)")
        time.sleep(0.5)
        _restart(config, name)
        print(f"  {name} started again")


def _pause(name: str, seconds: float = 10.0) -> Callable[[dict[str, Any]], None]:
    def disturb(_: dict[str, Any]) -> None:
        pid = int((stack.INFRA_STATE / f"{name}.pid").read_text().split()[0])
        os.kill(pid, signal.SIGSTOP)
        print(f"  {name} server paused (SIGSTOP) for {seconds:.0f} s")
        try:
            time.sleep(seconds)
        finally:
            os.kill(pid, signal.SIGCONT)
        print(f"  {name} server answers again")

    return disturb


def _inference_outage(_: dict[str, Any]) -> None:
    servers.stop("inference", stack.INFRA_STATE)
    print("  inference server stopped")
    time.sleep(8)
    servers.start_triton(stack.REPOSITORY, state=stack.INFRA_STATE)
    print("  inference server started again")


SCENARIOS: dict[str, Callable[[dict[str, Any]], None] | None] = {
    "normal": None,
    "inference-outage": _inference_outage,
    "kill": _kill_each,
    "pause-broker": _pause("kafka"),
    "pause-store": _pause("s3"),
    "scanners": None,
    "promotion": None,  # its own run: run_promotion
    "notify": None,  # its own run: run_notify
}


def _scanner_keys(config: dict[str, Any], count: int) -> list[str]:
    """The stack's scanner key, and ``count - 1`` scanners more."""
    keys = [config["scanner_key"]]
    base = {k: v for k, v in os.environ.items() if not k.startswith("STAINLESS_")}
    for _ in range(count - 1):
        name = f"e2e-{uuid.uuid4().hex[:8]}"
        keys.append(
            stack.run_command(
                [str(stack.BIN / "stainless"), "scanner", "add", name], {**base, **config["env"]}
            )
        )
    return keys


def _listen(env: dict[str, str]) -> KafkaConsumer:
    """A consumer of ``slides.completed`` from now on, in a group of its own."""
    consumer = KafkaConsumer(
        "stainless." + Topic.SLIDES_COMPLETED,
        bootstrap_servers=env["STAINLESS_BUS__BOOTSTRAP_SERVERS"],
        group_id=f"e2e-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="latest",
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )
    while not consumer.assignment():
        consumer.poll(timeout_ms=500)
    return consumer


def run(config: dict[str, Any], *, fields: int, seed: int, scenario: str) -> None:
    if scenario == "promotion":
        run_promotion(config, fields=fields, seed=seed)
        return
    if scenario == "notify":
        run_notify(config, fields=fields, seed=seed)
        return
    consumer = _listen(config["env"])
    keys = _scanner_keys(config, 3 if scenario == "scanners" else 1)
    clients = [
        httpx.Client(base_url=config["urls"]["ingestion"], headers={"X-API-Key": key}, timeout=120)
        for key in keys
    ]
    refusals = unavailable_count()
    started = time.monotonic()
    with ThreadPoolExecutor(len(clients)) as pool:
        uploads = list(
            pool.map(lambda c, i: upload(c, fields, seed + i), clients, range(len(clients)))
        )
    slides = [slide_id for slide_id, _ in uploads]
    print(f"slides {', '.join(slides)}: uploaded in {time.monotonic() - started:.1f} s")
    disturb = SCENARIOS[scenario]
    if disturb is not None:
        disturb(config)
    events = completions(consumer, set(slides), timeout_s=300)
    consumer.close()
    for slide_id in slides:
        got = [e for e in events if e.slide_id == slide_id]
        check(len(got) == 1, f"slide {slide_id[:8]}: exactly one slides.completed (got {len(got)})")
    if scenario == "inference-outage":
        waited = {k: v - refusals[k] for k, v in unavailable_count().items()}
        check(
            sum(waited.values()) > 0,
            "the pipeline waited out the outage "
            + ", ".join(f"{v:.0f} {k} refusals" for k, v in waited.items()),
        )
    print(f"  completed {time.monotonic() - started:.1f} s after the first upload")
    for event in events:
        _check_results(config, event)


def _processes() -> dict[str, int]:
    """The PID of every process of the stack (services and servers) that is alive."""
    pids = {}
    for state in (stack.STATE, stack.INFRA_STATE):
        for path in state.glob("*.pid"):
            pid = int(path.read_text().split()[0])
            try:
                os.kill(pid, 0)
            except OSError:
                continue
            pids[f"{state.name}/{path.stem}"] = pid
    return pids


def _predictions(config: dict[str, Any], slide_id: str) -> list[Any]:
    """Every prediction of the slide's cells: ``(cell_id, model_version)`` rows."""
    engine = create_engine(config["env"]["STAINLESS_DATABASE__URL"])
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT prediction.cell_id, prediction.model_version FROM prediction"
                " JOIN cell ON cell.id = prediction.cell_id WHERE cell.slide_id = :slide"
            ),
            {"slide": slide_id},
        ).all()
    engine.dispose()
    return list(rows)


def _versions(config: dict[str, Any], slide_id: str) -> list[str]:
    """The model version of each prediction of the slide's cells."""
    return [row.model_version for row in _predictions(config, slide_id)]


def _metric(service: str, name: str) -> float:
    url = f"http://127.0.0.1:{stack.PORTS[service]}/metrics"
    lines = httpx.get(url, timeout=10).text.splitlines()
    return sum(float(line.split()[-1]) for line in lines if line.startswith(name + " "))


def _wait(condition: Callable[[], bool], what: str, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise CheckFailed(f"{what}: not within {timeout_s:.0f} s")
        time.sleep(0.5)


def _promote(config: dict[str, Any]) -> str:
    """Register the demo checkpoint as a new model version and promote it, as an operator
    does (the S3 server's admin key; ``stainless promote --instance cpu-python``)."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("STAINLESS_")},
        **config["env"],
    }
    admin = json.loads((stack.INFRA_STATE / servers.S3_ADMIN).read_text())
    store = create_store(
        StoreSettings(
            backend=StoreBackend.S3,
            endpoint=env["STAINLESS_STORE__ENDPOINT"],
            bucket=env["STAINLESS_STORE__BUCKET"],
            access_key=admin["AccessKeyId"],
            secret_key=admin["SecretAccessKey"],
            create_bucket=False,
        )
    )
    prefix = f"models/mtmd/e2e-{uuid.uuid4().hex[:8]}"
    for name in ("checkpoint.pt", "config.yaml"):
        store.put(f"{prefix}/{name}", (stack.DEMO_CHECKPOINT.parent / name).read_bytes())
    engine = create_engine(env["STAINLESS_DATABASE__URL"])
    version = registered(
        engine,
        name="mtmd-tiny",
        kind="mtmd",
        checkpoint_key=f"{prefix}/checkpoint.pt",
        metrics={"review_threshold": read_manifest(stack.REPOSITORY).review_threshold},
    )
    engine.dispose()
    operator = stack.operator_env(env)
    # The same checkpoint again: its training compared it with nothing, so it is forced.
    command = [str(stack.BIN / "stainless"), "promote", version.id, "--instance", "cpu-python"]
    command.append("--force")
    stack.run_command(command, operator)
    return f"{version.name}/{version.version}"


def run_promotion(config: dict[str, Any], *, fields: int, seed: int) -> None:
    """A promotion in the middle of a stream of slides (the ``promotion`` scenario): the
    first slide's first field is stained, the model is promoted, the rest of its fields
    follow, and two more slides after them."""
    consumer = _listen(config["env"])
    client = httpx.Client(
        base_url=config["urls"]["ingestion"],
        headers={"X-API-Key": config["scanner_key"]},
        timeout=120,
    )
    processes = _processes()
    switches = _metric("inference", "stainless_inference_model_switches_total")
    old = read_manifest(stack.REPOSITORY).model_version
    stained_before: list[int] = []

    def promote_after_first_field(slide_id: str, sent: int) -> None:
        if sent != 1:
            return
        _wait(lambda: bool(_versions(config, slide_id)), "the first field's cells stained")
        stained_before.append(len(_versions(config, slide_id)))
        print(f"  slide {slide_id[:8]}: {stained_before[0]} cells stained by {old}")
        promoted = _promote(config)
        served = read_manifest(stack.REPOSITORY).model_version
        print(f"  {promoted} promoted: the repository serves {served}")

    before, _ = upload(client, max(fields, 2), seed, between=promote_after_first_field)
    new = read_manifest(stack.REPOSITORY).model_version
    print(f"slide {before[:8]}: uploaded across the promotion")
    with ThreadPoolExecutor(2) as pool:
        after = [s for s, _ in pool.map(lambda i: upload(client, fields, seed + i), (1, 2))]
    print(f"slides {', '.join(s[:8] for s in after)}: uploaded after it")
    events = completions(consumer, {before, *after}, timeout_s=300)
    consumer.close()
    for slide_id in (before, *after):
        got = [e for e in events if e.slide_id == slide_id]
        check(len(got) == 1, f"slide {slide_id[:8]}: exactly one slides.completed (got {len(got)})")
    check(
        set(_versions(config, before)) == {old},
        f"slide {before[:8]}, begun before the promotion, carries {old} only "
        f"({stained_before[0]} of {len(_versions(config, before))} cells stained before it)",
    )
    for slide_id in after:
        check(set(_versions(config, slide_id)) == {new}, f"slide {slide_id[:8]} carries {new} only")
    switched = _metric("inference", "stainless_inference_model_switches_total") - switches
    check(switched >= 1, f"the inference service switched ({switched:.0f} times)")
    for event in events:
        _check_results(config, event)
    check(
        _processes() == processes,
        f"no process was restarted ({len(processes)} processes, the same PIDs)",
    )


class _Endpoint:
    """A laboratory's notification endpoint on loopback: it records every POST and answers
    503 while ``refusing``, 200 otherwise."""

    def __init__(self) -> None:
        self.refusing = True
        self.received: list[tuple[int, dict[str, str], bytes]] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status = 503 if endpoint.refusing else 200
                endpoint.received.append((status, dict(self.headers), body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_port}/fhir-notify"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def of_event(self, event_id: str) -> list[tuple[int, dict[str, str], bytes]]:
        return [r for r in list(self.received) if r[1].get("X-Stainless-Event-Id") == event_id]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def run_notify(config: dict[str, Any], *, fields: int, seed: int) -> None:
    """The notifier against an endpoint that refuses, the dead letter, a replay once the
    endpoint is mended, and the report delivered exactly once (the ``notify`` scenario)."""
    consumer = _listen(config["env"])
    client = httpx.Client(
        base_url=config["urls"]["ingestion"],
        headers={"X-API-Key": config["scanner_key"]},
        timeout=120,
    )
    slide_id, _ = upload(client, fields, seed)
    events = completions(consumer, {slide_id}, timeout_s=300)
    consumer.close()
    check(len(events) == 1, f"slide {slide_id[:8]}: completed")
    endpoint = _Endpoint()
    base = {k: v for k, v in os.environ.items() if not k.startswith("STAINLESS_")}
    env = {**base, **config["env"]}
    notifier_env = env | {"STAINLESS_NOTIFY__WEBHOOK_URL": endpoint.url}
    servers.spawn("notifier", [str(stack.BIN / "stainless-notifier")], stack.STATE, notifier_env)
    bus = create_bus(
        BusSettings(
            backend=BusBackend.KAFKA, bootstrap_servers=env["STAINLESS_BUS__BOOTSTRAP_SERVERS"]
        )
    )
    try:
        found: list[Letter] = []

        def dead_lettered() -> bool:
            found[:] = [
                letter
                for letter in read_letters(bus, Topic.SLIDES_COMPLETED)
                if letter.original is not None
                and json.loads(letter.original)["payload"]["slide_id"] == slide_id
                and letter.consumer == "stainless-notifier"
            ]
            return bool(found)

        _wait(dead_lettered, "the refused report dead-lettered", timeout_s=120)
        letter = found[0]
        event_id = letter.event_id
        assert event_id is not None
        refused = endpoint.of_event(event_id)
        check(
            len(refused) >= 2 and {status for status, _, _ in refused} == {503},
            f"the endpoint refused the report {len(refused)} times; the letter says "
            f"{letter.error!r} after {letter.attempts} attempts",
        )
        endpoint.refusing = False
        command = [str(stack.BIN / "stainless"), "dlq", "replay", Topic.SLIDES_COMPLETED]
        stack.run_command([*command, "--event-id", event_id], env)
        _wait(
            lambda: any(status == 200 for status, _, _ in endpoint.of_event(event_id)),
            "the replayed report delivered",
            timeout_s=60,
        )
        time.sleep(2)  # a second delivery would be a bug
        delivered = [r for r in endpoint.of_event(event_id) if r[0] == 200]
        check(len(delivered) == 1, "after stainless dlq replay the report arrived exactly once")
        _, headers, body = delivered[0]
        report = DiagnosticReport.model_validate(json.loads(body))
        check(
            headers.get("X-Stainless-Event") == "report-ready" and report.status == "preliminary",
            f"it is the slide's preliminary report ({report.status}), as a FHIR DiagnosticReport",
        )
    finally:
        bus.close()
        servers.stop("notifier", stack.STATE)
        endpoint.close()


def _check_results(config: dict[str, Any], event: SlideCompleted) -> None:
    slide_id = event.slide_id
    results = httpx.Client(
        base_url=config["urls"]["results"],
        headers={"X-API-Key": config["results_key"]},
        timeout=30,
    )
    slide = results.get(f"/v1/slides/{slide_id}").json()
    cells = results.get(f"/v1/slides/{slide_id}/cells").json()
    check(slide["status"] == "completed", f"the results API shows the slide {slide['status']}")
    check(len(cells) == event.cell_count > 0, f"{len(cells)} cells, as the event says")
    per_cell = Counter(row.cell_id for row in _predictions(config, slide_id))
    check(
        len(per_cell) == len(cells) and set(per_cell.values()) == {1},
        "every cell has exactly one prediction",
    )
    report = results.get(f"/v1/slides/{slide_id}/fhir")
    DiagnosticReport.model_validate(report.json())
    check(report.status_code == 200, "the FHIR DiagnosticReport validates")
    counts = sum(v for v in event.differential.values())
    check(counts == len(cells), "the differential counts every cell")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="normal")
    parser.add_argument(
        "--fault", action="store_true", help="the same as --scenario inference-outage"
    )
    parser.add_argument("--fields", type=int, default=3)
    parser.add_argument("--seed", type=int, default=21)
    args = parser.parse_args(argv)
    scenario = "inference-outage" if args.fault else args.scenario
    path = stack.STATE / "stack.json"
    if not path.is_file():
        print(f"error: the stack is not up ({path} is missing): run `make up`", file=sys.stderr)
        return 2
    print(f"scenario: {scenario}")
    try:
        run(json.loads(path.read_text()), fields=args.fields, seed=args.seed, scenario=scenario)
    except (CheckFailed, servers.InfraError, httpx.HTTPError) as exc:
        print(f"FAILED ({scenario}): {exc}", file=sys.stderr)
        return 1
    print(f"e2e passed ({scenario})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
