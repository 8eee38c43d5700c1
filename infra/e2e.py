"""End to end against the running stack (``make up``): a phantom slide from upload to report.

Uploads a phantom slide over HTTP to the ingestion API, completes it, and waits for its
``slides.completed`` event on the Kafka broker; then checks the results API (slide
completed, one prediction per cell, a valid FHIR report). With ``--fault`` the inference
server is stopped right after the upload and started again a few seconds later: the
slide must still complete, with every cell predicted exactly once.

Usage: ``python infra/e2e.py [--fault] [--fields N]``; exit code 0 when every check holds.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import servers
import stack
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from kafka import KafkaConsumer
from sqlalchemy import create_engine, text

from stainless.core.events import SlideCompleted, Topic, decode_envelope
from stainless.core.storage.local import LocalObjectStore
from stainless.datasets.phantom import write_slide
from stainless.imaging.phantom_set import phantom_config


class CheckFailed(AssertionError):
    pass


def check(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)
    print(f"  ok: {message}")


def upload(client: httpx.Client, fields: int, seed: int) -> tuple[str, int]:
    """A phantom slide over HTTP; returns the slide id and its fields."""
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
        for field in entry["fields"]:
            for modality, key in (("DIC", field["dic"]), ("BF", field["bf"])):
                client.post(
                    f"/v1/slides/{slide_id}/fields",
                    files={"file": (key, phantom.get(key), "application/octet-stream")},
                    data={"modality": modality, "index": str(field["index"])},
                ).raise_for_status()
    client.post(f"/v1/slides/{slide_id}/complete").raise_for_status()
    return slide_id, len(entry["fields"])


def completions(consumer: KafkaConsumer, slide_id: str, timeout_s: float) -> list[SlideCompleted]:
    """Every ``slides.completed`` event of the slide seen within ``timeout_s``."""
    found: list[SlideCompleted] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            for record in records:
                envelope = decode_envelope(record.value, topic=Topic.SLIDES_COMPLETED)
                event = envelope.parsed(SlideCompleted)
                if event.slide_id == slide_id:
                    found.append(event)
        if found:
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


def run(config: dict[str, Any], *, fields: int, seed: int, fault: bool) -> None:
    env = config["env"]
    prefix = "stainless."
    consumer = KafkaConsumer(
        prefix + Topic.SLIDES_COMPLETED,
        bootstrap_servers=env["STAINLESS_BUS__BOOTSTRAP_SERVERS"],
        group_id=f"e2e-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="latest",
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )
    while not consumer.assignment():
        consumer.poll(timeout_ms=500)
    ingestion = httpx.Client(
        base_url=config["urls"]["ingestion"],
        headers={"X-API-Key": config["scanner_key"]},
        timeout=120,
    )
    refusals = unavailable_count()
    started = time.monotonic()
    slide_id, uploaded = upload(ingestion, fields, seed)
    print(f"slide {slide_id}: {uploaded} fields uploaded in {time.monotonic() - started:.1f} s")
    if fault:
        servers.stop("inference", stack.INFRA_STATE)
        print("  inference server stopped")
        time.sleep(8)
        servers.start_inference(stack.REPOSITORY, state=stack.INFRA_STATE)
        print("  inference server started again")
    events = completions(consumer, slide_id, timeout_s=300)
    consumer.close()
    check(len(events) == 1, f"exactly one slides.completed (got {len(events)})")
    if fault:
        waited = {k: v - refusals[k] for k, v in unavailable_count().items()}
        check(
            sum(waited.values()) > 0,
            "the pipeline waited out the outage "
            + ", ".join(f"{v:.0f} {k} refusals" for k, v in waited.items()),
        )
    print(f"  completed {time.monotonic() - started:.1f} s after the first upload")

    results = httpx.Client(
        base_url=config["urls"]["results"],
        headers={"X-API-Key": config["results_key"]},
        timeout=30,
    )
    slide = results.get(f"/v1/slides/{slide_id}").json()
    cells = results.get(f"/v1/slides/{slide_id}/cells").json()
    check(slide["status"] == "completed", f"the results API shows the slide {slide['status']}")
    check(len(cells) == events[0].cell_count > 0, f"{len(cells)} cells, as the event says")
    engine = create_engine(env["STAINLESS_DATABASE__URL"])
    with engine.connect() as connection:
        per_cell = connection.execute(
            text(
                "SELECT count(*) AS n FROM prediction JOIN cell ON cell.id = prediction.cell_id"
                " WHERE cell.slide_id = :slide GROUP BY prediction.cell_id"
            ),
            {"slide": slide_id},
        ).all()
    engine.dispose()
    check(
        len(per_cell) == len(cells) and all(row.n == 1 for row in per_cell),
        "every cell has exactly one prediction",
    )
    report = results.get(f"/v1/slides/{slide_id}/fhir")
    DiagnosticReport.model_validate(report.json())
    check(report.status_code == 200, "the FHIR DiagnosticReport validates")
    counts = sum(v for v in events[0].differential.values())
    check(counts == len(cells), "the differential counts every cell")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fault", action="store_true", help="stop the inference server mid-way")
    parser.add_argument("--fields", type=int, default=3)
    parser.add_argument("--seed", type=int, default=21)
    args = parser.parse_args(argv)
    path = stack.STATE / "stack.json"
    if not path.is_file():
        print(f"error: the stack is not up ({path} is missing): run `make up`", file=sys.stderr)
        return 2
    try:
        run(json.loads(path.read_text()), fields=args.fields, seed=args.seed, fault=args.fault)
    except (CheckFailed, servers.InfraError, httpx.HTTPError) as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    print(
        "e2e passed" + (" (with the inference server stopped and restarted)" if args.fault else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
