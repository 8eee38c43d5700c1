"""Report notifications to a real HTTP endpoint on loopback: each report as the API serves
it, with its event, id and authorization; a refusal is retried, then dead-lettered."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from stainless.core.config import ClinicalSettings, NotifySettings
from stainless.core.db.models import SlideStatus
from stainless.core.events.bus import InMemoryBus, RetryPolicy
from stainless.core.events.contracts import Envelope, SlideCancelled, SlideCompleted, Topic
from stainless.stages.review.notify import ReportNotifier, notifier_consumer

from .conftest import REVIEWER, CellSpec, World


@dataclass
class Endpoint:
    """An HTTP server on loopback that records what is POSTed and answers ``status``."""

    url: str
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    status: int = 202


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    found = Endpoint(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            found.received.append((dict(self.headers.items()), body))
            self.send_response(found.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    found.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/stainless"
    yield found
    server.shutdown()
    server.server_close()


def _consumer(world: World, endpoint: Endpoint, bus: InMemoryBus):  # type: ignore[no-untyped-def]
    settings = NotifySettings(
        webhook_url=endpoint.url, authorization=SecretStr("Bearer lis-token"), timeout_s=5
    )
    notifier = ReportNotifier(world.engine, httpx.Client(), settings, ClinicalSettings().rules())
    return notifier_consumer(bus, world.engine, notifier)


def test_each_report_is_posted_as_the_api_serves_it_once_per_event(
    world: World, endpoint: Endpoint, client: TestClient
) -> None:
    bus = InMemoryBus()
    consumer = _consumer(world, endpoint, bus)
    built = world.slide([CellSpec("LY"), CellSpec("MO")])
    completed = Envelope.wrap(
        SlideCompleted(slide_id=built.slide_id, cell_count=2, differential={}, needs_review=0),
        key=built.slide_id,
    )
    bus.publish(completed)
    bus.publish(completed)  # delivered twice: posted once
    assert consumer.poll_once(timeout_s=0.1) == 2
    [(headers, body)] = endpoint.received
    assert headers["Content-Type"] == "application/fhir+json"
    assert headers["X-Stainless-Event"] == "report-ready"
    assert headers["X-Stainless-Event-Id"] == completed.event_id
    assert headers["Authorization"] == "Bearer lis-token" and "ETag" not in headers
    served = client.get(f"/v1/slides/{built.slide_id}/fhir", headers=REVIEWER).json()
    posted = json.loads(body)
    assert posted.pop("issued") and served.pop("issued")  # a preliminary report's is "now"
    assert posted == served and posted["status"] == "preliminary"

    assert client.post(f"/v1/slides/{built.slide_id}/sign", headers=REVIEWER).is_success
    (signed,) = world.events(Topic.REPORTS_SIGNED)
    bus.publish_raw(Topic.REPORTS_SIGNED, built.slide_id, signed.payload.encode())
    assert consumer.poll_once(timeout_s=0.1) == 1
    headers, body = endpoint.received[-1]
    assert headers["X-Stainless-Event"] == "report-signed"
    assert headers["ETag"] == f'"{hashlib.sha256(body).hexdigest()}"'
    assert body == client.get(f"/v1/slides/{built.slide_id}/fhir", headers=REVIEWER).content

    withdrawn = world.slide([], status=SlideStatus.CANCELLED)
    bus.publish(Envelope.wrap(SlideCancelled(slide_id=withdrawn.slide_id, fields=0), key="x"))
    consumer.poll_once(timeout_s=0.1)
    headers, body = endpoint.received[-1]
    assert headers["X-Stainless-Event"] == "report-cancelled"
    assert json.loads(body)["status"] == "cancelled"


def test_a_refused_notification_is_retried_then_dead_lettered_with_the_cause(
    world: World, endpoint: Endpoint
) -> None:
    bus = InMemoryBus(policy=RetryPolicy(max_attempts=2, backoff_s=0.01))
    consumer = _consumer(world, endpoint, bus)
    built = world.slide([CellSpec("LY")])
    endpoint.status = 503
    payload = SlideCompleted(slide_id=built.slide_id, cell_count=1, differential={}, needs_review=0)
    bus.publish(Envelope.wrap(payload, key=built.slide_id))
    consumer.poll_once(timeout_s=0.1)
    assert len(endpoint.received) == 2  # both attempts reached the endpoint
    [(_, raw)] = bus.messages(Topic.SLIDES_COMPLETED.dlq)
    letter = json.loads(raw)["payload"]
    assert letter["consumer"] == "stainless-notifier" and letter["attempts"] == 2
    assert f"{endpoint.url} answered 503" in letter["error"]


def test_without_a_webhook_the_notifier_does_not_start() -> None:
    from stainless.stages.review.notify import NotifierServiceSettings, build

    with pytest.raises(SystemExit, match="STAINLESS_NOTIFY__WEBHOOK_URL"):
        build(NotifierServiceSettings(), threading.Event())
    with pytest.raises(ValueError, match="webhook_url"):
        NotifySettings(webhook_url="ftp://lis.example/hook")
