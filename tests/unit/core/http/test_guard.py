"""The request guard answers before a body is read, and stops a body at its first limit."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

import pytest
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.testclient import TestClient

from stainless.core.http.errors import (
    Forbidden,
    Unauthorized,
    Unavailable,
    install_error_handlers,
)
from stainless.core.http.guard import BodyLimit, RequestGuard, guarded_caller
from stainless.core.http.headers import SECURITY_HEADERS, SecurityHeaders, security_headers

KEY = {"X-API-Key": "good"}


def _app(seen: list[str]) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/json")
    async def echo(request: Request) -> dict[str, Any]:
        body = await request.body()
        seen.append("json")
        return {"n": len(body)}

    @app.post("/v1/upload")
    def upload(
        file: Annotated[UploadFile, File()], note: Annotated[str, Form()] = ""
    ) -> dict[str, int]:
        seen.append("upload")
        return {"n": len(file.file.read())}

    @app.get("/health/live")
    def live() -> dict[str, str]:
        return {"status": "live"}

    limits = [BodyLimit("POST", r"/v1/upload", 10_000, max_parts=2)]

    def identify(key: str | None) -> str:
        if key != "good":
            raise Unauthorized("unknown API key")
        return "the good caller"

    app.add_middleware(RequestGuard, identify=identify, limits=limits, default_limit=1000)
    app.add_middleware(SecurityHeaders)
    install_error_handlers(app)
    return app


@pytest.fixture
def seen() -> list[str]:
    return []


@pytest.fixture
def client(seen: list[str]) -> TestClient:
    return TestClient(_app(seen))


def _chunks(total: int, size: int = 256) -> Iterator[bytes]:
    for start in range(0, total, size):
        yield b"x" * min(size, total - start)


def test_a_request_without_a_valid_key_is_refused_unread(
    client: TestClient, seen: list[str]
) -> None:
    for headers in ({}, {"X-API-Key": "bad"}, {"Authorization": "Bearer bad"}):
        answer = client.post("/v1/json", content=_chunks(10**6), headers=headers)
        assert answer.status_code == 401
        assert answer.json() == {"error": "unauthorized", "detail": "unknown API key"}
    assert client.post("/v1/json", json={}, headers={"Authorization": "Bearer good"}).is_success
    assert client.get("/health/live").is_success  # outside /v1/: no key needed
    assert seen == ["json"]


def test_bodies_over_the_route_limit_are_refused(client: TestClient, seen: list[str]) -> None:
    declared = client.post("/v1/json", content=b"x" * 1001, headers=KEY)
    assert declared.status_code == 413 and declared.json()["error"] == "too_large"
    chunked = client.post("/v1/json", content=_chunks(5000), headers=KEY)
    assert chunked.status_code == 413 and "exceeds 1000 bytes" in chunked.json()["detail"]
    assert "json" not in seen  # the route never had its body
    big = client.post("/v1/upload", files={"file": ("f", b"x" * 20_000)}, headers=KEY)
    assert big.status_code == 413
    fits = client.post("/v1/upload", files={"file": ("f", b"x" * 5000)}, headers=KEY)
    assert fits.json() == {"n": 5000}


def test_a_form_with_more_parts_than_the_route_takes_is_refused(
    client: TestClient, seen: list[str]
) -> None:
    two = client.post("/v1/upload", files={"file": ("f", b"1")}, data={"note": "a"}, headers=KEY)
    assert two.is_success, two.text
    extra = [("file", ("f", b"1")), ("more", ("g", b"2")), ("again", ("h", b"3"))]
    answer = client.post("/v1/upload", files=extra, headers=KEY)
    assert answer.status_code == 413 and "more than 2 parts" in answer.json()["detail"]
    assert seen == ["upload"]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"[" * 17 + b"]" * 17, 422),
        (b'{"a": "' + b"[" * 100 + b'"}', 200),  # brackets inside a string do not nest
        (b'{"a": "\\"' + b"{" * 100 + b'"}', 200),  # nor after an escaped quote
        (b"[" * 16 + b"]" * 16, 200),
    ],
)
def test_json_depth_is_bounded(client: TestClient, body: bytes, status: int) -> None:
    answer = client.post(
        "/v1/json", content=body, headers={**KEY, "Content-Type": "application/json"}
    )
    assert answer.status_code == status, answer.text


def test_every_answer_carries_the_security_headers(client: TestClient) -> None:
    for answer in (client.get("/health/live"), client.post("/v1/json"), client.get("/nowhere")):
        for name, value in SECURITY_HEADERS.items():
            assert answer.headers[name] == value
    missing = client.get("/nowhere")
    assert missing.json() == {"error": "not_found", "detail": "Not Found"}


def test_public_paths_need_no_key_refusals_keep_their_status_and_the_caller_is_handed_on() -> None:
    seen: list[str] = []
    app = FastAPI()

    @app.get("/v1/open")
    def open_route(request: Request) -> dict[str, object]:
        return {"open": "yes", "caller": guarded_caller(request)}

    @app.post("/v1/closed")
    async def closed(request: Request) -> dict[str, object]:
        seen.append("closed")
        return {"n": len(await request.body()), "caller": guarded_caller(request)}

    def identify(key: str | None) -> str:
        seen.append(f"identify {key}")
        if key == "roleless":
            raise Forbidden("no role")
        if key == "provider-down":
            raise Unavailable("the identity provider cannot be reached")
        if key != "good":
            raise Unauthorized("unknown API key")
        return "the good caller"

    app.add_middleware(RequestGuard, identify=identify, public={"/v1/open"})
    install_error_handlers(app)
    client = TestClient(app)
    assert client.get("/v1/open").json() == {"open": "yes", "caller": None}
    assert client.get("/v1/open/more").status_code == 401  # exact paths only
    seen.clear()
    for key, status, code in (
        ("roleless", 403, "forbidden"),
        ("provider-down", 503, "unavailable"),
    ):
        answer = client.post("/v1/closed", content=_chunks(10**5), headers={"X-API-Key": key})
        assert (answer.status_code, answer.json()["error"]) == (status, code)
    assert seen == ["identify roleless", "identify provider-down"]  # no body read
    seen.clear()
    answer = client.post("/v1/closed", content=b"x", headers=KEY)
    assert answer.json() == {"n": 1, "caller": "the good caller"}
    assert seen == ["identify good", "closed"]


def test_the_page_may_fetch_from_named_origins_only() -> None:
    policy = security_headers(["https://idp.example"])["Content-Security-Policy"]
    assert "connect-src 'self' https://idp.example;" in policy
    assert policy.startswith("default-src 'self';") and "frame-ancestors 'none'" in policy
    assert "connect-src" not in SECURITY_HEADERS["Content-Security-Policy"]
    for bad in ("https://idp.example; script-src *", "'unsafe-inline'", "a b"):
        with pytest.raises(ValueError, match="not an origin"):
            security_headers([bad])
