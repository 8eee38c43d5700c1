"""Live/ready endpoints and Prometheus metrics for every service process."""

from __future__ import annotations

import threading
from collections.abc import Callable

import structlog
import uvicorn
from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

ReadyCheck = Callable[[], bool]

log = structlog.get_logger(__name__)


def add_health_routes(app: FastAPI, ready: ReadyCheck, *, metrics: bool = True) -> None:
    """Add ``/health/live``, ``/health/ready`` (dependencies answer) and, unless the app is
    an API whose metrics are served on a port of their own, ``/metrics``."""

    @app.get("/health/live", tags=["health"])
    def live() -> dict[str, str]:
        return {"status": "live"}

    @app.get("/health/ready", tags=["health"], responses={503: {"description": "not ready"}})
    def readiness() -> Response:
        try:
            ok = ready()
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            log.warning("not ready", error=str(exc))  # the driver's text stays in the log
            body = {"status": "not ready", "reason": type(exc).__name__}
            return JSONResponse(body, status_code=503)
        if not ok:
            return JSONResponse({"status": "not ready"}, status_code=503)
        return JSONResponse({"status": "ready"})

    if metrics:
        add_metrics_route(app)


def add_metrics_route(app: FastAPI) -> None:
    @app.get("/metrics", tags=["health"])
    def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def create_metrics_app(*, title: str) -> FastAPI:
    """Only ``/metrics``: served beside an API on a port of its own (not the clients')."""
    app = FastAPI(title=title, docs_url=None, redoc_url=None, openapi_url=None)
    add_metrics_route(app)
    return app


def create_health_app(ready: ReadyCheck, *, title: str) -> FastAPI:
    app = FastAPI(title=title, docs_url=None, redoc_url=None)
    add_health_routes(app, ready)
    return app


class HealthServer:
    """Serves a health app from a background thread beside a worker loop."""

    def __init__(self, app: FastAPI, *, host: str = "0.0.0.0", port: int) -> None:  # noqa: S104
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="health", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=5)
