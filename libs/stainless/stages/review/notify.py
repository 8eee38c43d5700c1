"""Report notifications: each report POSTed to the laboratory's endpoint as it changes.

The notifier consumes ``slides.completed`` (a preliminary report is ready),
``reports.signed`` (it is final) and ``slides.cancelled``, and POSTs the slide's FHIR
DiagnosticReport, as ``GET /v1/slides/{id}/fhir`` serves it at that moment, to
``STAINLESS_NOTIFY__WEBHOOK_URL``: a FHIR Subscription rest-hook with the full resource
as its payload. Each POST carries ``Content-Type: application/fhir+json``, the event
(``X-Stainless-Event``: ``report-ready``, ``report-signed``, ``report-cancelled``), the
event's id (``X-Stainless-Event-Id``: the same on a redelivery, for the receiver to drop
repeats), the report's SHA-256 once signed (``ETag``) and, when set, the configured
``Authorization``. An answer other than 2xx, or none within the timeout, fails the event:
it is retried and then dead-lettered with the cause, as every consumer's events are.
"""

from __future__ import annotations

import threading

import httpx
import structlog
from prometheus_client import Counter
from sqlalchemy import Engine
from sqlmodel import Session

from stainless.core.config import (
    BusSettings,
    ClinicalSettings,
    DatabaseSettings,
    NotifySettings,
    ProcessSettings,
)
from stainless.core.db.engine import ping
from stainless.core.events import EventBus
from stainless.core.events.bus import Consumer
from stainless.core.events.contracts import ConsumerGroup, Envelope, Topic
from stainless.core.events.idempotency import IdempotentHandler
from stainless.core.observability import HealthServer, create_health_app
from stainless.core.runners import Service, connect
from stainless.domain.differential import ClinicalRules
from stainless.stages.review.queries import fhir_report

log = structlog.get_logger(__name__)

EVENTS = {
    Topic.SLIDES_COMPLETED.value: "report-ready",
    Topic.REPORTS_SIGNED.value: "report-signed",
    Topic.SLIDES_CANCELLED.value: "report-cancelled",
}
NOTIFICATIONS = Counter(
    "stainless_notifications_total",
    "Report notifications POSTed to the webhook, by event and outcome.",
    ["event", "outcome"],
)


class NotificationFailed(RuntimeError):
    """The endpoint did not accept a notification (retried, then dead-lettered)."""


class ReportNotifier:
    """POST the report of each event's slide to the endpoint (the handler of the consumer)."""

    def __init__(
        self, engine: Engine, client: httpx.Client, settings: NotifySettings, rules: ClinicalRules
    ) -> None:
        if settings.webhook_url is None:
            raise ValueError("no webhook: set STAINLESS_NOTIFY__WEBHOOK_URL")
        self._engine = engine
        self._client = client
        self._url = settings.webhook_url
        self._authorization = settings.authorization
        self._timeout_s = settings.timeout_s
        self._rules = rules

    def __call__(self, session: Session, envelope: Envelope) -> None:
        """POST the report (``session`` holds the consumer's marker of the event: it commits
        once the endpoint has accepted it)."""
        event = EVENTS[envelope.topic]
        slide_id = str(envelope.payload["slide_id"])
        body, sha256 = fhir_report(self._engine, slide_id=slide_id, rules=self._rules)
        headers = {
            "Content-Type": "application/fhir+json",
            "X-Stainless-Event": event,
            "X-Stainless-Event-Id": envelope.event_id,
        }
        if sha256 is not None:
            headers["ETag"] = f'"{sha256}"'
        if self._authorization is not None:
            headers["Authorization"] = self._authorization.get_secret_value()
        try:
            answer = self._client.post(
                self._url, content=body, headers=headers, timeout=self._timeout_s
            )
        except httpx.HTTPError as exc:
            NOTIFICATIONS.labels(event, "failed").inc()
            raise NotificationFailed(f"{self._url}: {type(exc).__name__}: {exc}") from None
        if not answer.is_success:
            NOTIFICATIONS.labels(event, "refused").inc()
            raise NotificationFailed(
                f"{self._url} answered {answer.status_code}: {answer.text[:200]}"
            )
        NOTIFICATIONS.labels(event, "delivered").inc()
        log.info(
            "report notified", slide_id=slide_id, notification=event, status=answer.status_code
        )


def notifier_consumer(bus: EventBus, engine: Engine, notifier: ReportNotifier) -> Consumer:
    group = ConsumerGroup.NOTIFIER
    handler = IdempotentHandler(engine, group, notifier)
    return bus.consumer(group=group, topics=list(EVENTS), handler=handler)


class NotifierServiceSettings(ProcessSettings):
    """What the notifier reads."""

    database: DatabaseSettings = DatabaseSettings()
    bus: BusSettings = BusSettings()
    notify: NotifySettings = NotifySettings()
    clinical: ClinicalSettings = ClinicalSettings()


def build(
    settings: NotifierServiceSettings,
    stop: threading.Event,
    *,
    engine: Engine | None = None,
    bus: EventBus | None = None,
) -> Service:
    """The notifier process: its consumer, its HTTP client and its health server.

    Raises:
        SystemExit: no webhook is configured.
    """
    if settings.notify.webhook_url is None:
        raise SystemExit("stainless-notifier needs STAINLESS_NOTIFY__WEBHOOK_URL: where to POST")
    ports = connect(
        settings.database, settings.bus, client_id="stainless-notifier", engine=engine, bus=bus
    )
    client = httpx.Client(follow_redirects=False)
    notifier = ReportNotifier(ports.engine, client, settings.notify, settings.clinical.rules())
    consumer = notifier_consumer(ports.bus, ports.engine, notifier)
    health = HealthServer(
        create_health_app(lambda: ping(ports.engine), title="stainless-notifier"),
        port=settings.notify.http_port,
    )

    def close() -> None:
        consumer.close()
        client.close()
        ports.close()

    return Service(
        name="stainless-notifier",
        loop=consumer,
        health=health,
        close=close,
        details={"bus": settings.bus.backend.value, "webhook": settings.notify.webhook_url},
    )
