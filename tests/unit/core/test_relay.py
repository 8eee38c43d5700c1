from __future__ import annotations

import threading

from fastapi.testclient import TestClient

from stainless.core.config import DatabaseSettings
from stainless.core.db.engine import create_db_engine, session_scope
from stainless.core.events import Envelope, InMemoryBus, TrainingRequested
from stainless.core.events.outbox import OutboxRelay, add_event
from stainless.core.observability import create_health_app
from stainless.core.relay import RelayLoop


def test_loop_publishes_until_stopped(sqlite_url: str) -> None:
    engine = create_db_engine(DatabaseSettings(url=sqlite_url))
    with session_scope(engine) as session:
        payload = TrainingRequested(job_id="j", model_kind="mtmd", dataset_key="d", workers=1)
        add_event(session, Envelope.wrap(payload, key="j"))
    bus = InMemoryBus()
    stop = threading.Event()
    loop = RelayLoop(OutboxRelay(engine, bus), poll_interval_s=0.01)
    thread = threading.Thread(target=loop.run, args=(stop,))
    thread.start()
    try:
        for _ in range(200):
            if bus.messages("training.requested"):
                break
            stop.wait(0.01)
    finally:
        stop.set()
        thread.join(timeout=5)
    assert len(bus.messages("training.requested")) == 1
    assert not thread.is_alive()


def test_health_endpoints_report_readiness() -> None:
    ready = {"ok": True}

    def check() -> bool:
        if not ready["ok"]:
            raise ConnectionError("database unreachable")
        return True

    client = TestClient(create_health_app(check, title="t"))
    assert client.get("/health/live").json() == {"status": "live"}
    assert client.get("/health/ready").status_code == 200
    ready["ok"] = False
    response = client.get("/health/ready")
    assert response.status_code == 503
    assert response.json()["reason"] == "ConnectionError"  # the driver's text stays in the log
    assert "stainless_outbox_published_total" in client.get("/metrics").text
