"""Limits that hold before a request's body is read: an ASGI layer in front of every app.

FastAPI reads and parses a body before any dependency (the key check among them) runs, and
a size check on ``Content-Length`` alone misses a chunked body. :class:`RequestGuard`
answers first:

- a request to a protected path (``/v1/…``, but the public ones) without a valid key: 401,
  body unread (or the status of the refusal the key check raises: 403, 503);
- a declared length over the route's limit: 413, body unread;
- while the body streams (chunked included): past the route's limit, 413; a multipart body
  with more parts than the route takes, 413; JSON nested deeper than the limit, 422.

Whom the key identifies is handed on in the request's state (:func:`guarded_caller`): the
route's dependencies (roles, the scanner) take it from there instead of checking the key
again.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

import anyio
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stainless.core.http.errors import ServiceError, error_response

__all__ = ["DEFAULT_BODY_LIMIT", "BodyLimit", "RequestGuard", "guarded_caller", "presented_key"]

DEFAULT_BODY_LIMIT = 64 * 1024
"""Bytes of a body where a route names no limit of its own (every JSON request)."""


@dataclass(frozen=True)
class BodyLimit:
    """The body a route takes: ``method`` on paths matching ``path`` (a regular expression)."""

    method: str
    path: str
    max_bytes: int
    max_parts: int = 0  # parts of a multipart body; 0 = any number (the size still holds)

    def matches(self, method: str, path: str) -> bool:
        return method == self.method and re.fullmatch(self.path, path) is not None


class Refused(HTTPException):
    """A body refused while it streams; the app's error handlers answer it."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(status_code=status, detail=detail)
        self.code = code


def presented_key(headers: Headers) -> str | None:
    """The key in ``X-API-Key`` or ``Authorization: Bearer``, if any."""
    key = headers.get("x-api-key")
    if key:
        return key
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


_CALLER = "stainless.caller"


def guarded_caller(connection: HTTPConnection) -> object | None:
    """Whom the guard identified for this request (None on a path it does not guard)."""
    caller: object | None = connection.scope.get("state", {}).get(_CALLER)
    return caller


class _BodyWatch:
    """Counts a body as it streams and refuses it at the first limit it passes."""

    def __init__(self, limit: int, max_parts: int, headers: Headers, max_depth: int) -> None:
        self._limit = limit
        self._received = 0
        content_type = headers.get("content-type", "")
        boundary = re.search(r"boundary=\"?([^\";]+)\"?", content_type)
        self._delimiter = b"--" + boundary.group(1).encode() if boundary and max_parts else b""
        self._max_parts = max_parts
        self._delimiters = 0
        self._tail = b""
        self._json = content_type.split(";")[0].strip().lower().endswith("json")
        self._max_depth = max_depth
        self._depth = 0
        self._in_string = False
        self._escaped = False

    def see(self, chunk: bytes) -> None:
        self._received += len(chunk)
        if self._received > self._limit:
            raise Refused(413, "too_large", f"the request body exceeds {self._limit} bytes")
        if self._delimiter:
            self._count_parts(chunk)
        if self._json:
            self._track_depth(chunk)

    def _count_parts(self, chunk: bytes) -> None:
        window = self._tail + chunk
        self._delimiters += window.count(self._delimiter) - self._tail.count(self._delimiter)
        self._tail = window[-(len(self._delimiter) - 1) :]
        if self._delimiters - 1 > self._max_parts:  # the last delimiter closes the body
            raise Refused(413, "too_large", f"more than {self._max_parts} parts in the form")

    def _track_depth(self, chunk: bytes) -> None:
        for byte in chunk:
            if self._in_string:
                if self._escaped:
                    self._escaped = False
                elif byte == 0x5C:  # backslash
                    self._escaped = True
                elif byte == 0x22:  # quote
                    self._in_string = False
            elif byte == 0x22:
                self._in_string = True
            elif byte in (0x5B, 0x7B):  # [ {
                self._depth += 1
                if self._depth > self._max_depth:
                    raise Refused(422, "invalid", f"JSON nested deeper than {self._max_depth}")
            elif byte in (0x5D, 0x7D):
                self._depth -= 1


class RequestGuard:
    """ASGI layer: key and size limits before the app reads a body (see the module)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        identify: Callable[[str | None], object],
        limits: Sequence[BodyLimit] = (),
        default_limit: int = DEFAULT_BODY_LIMIT,
        protected_prefix: str = "/v1/",
        public: Collection[str] = (),
        max_json_depth: int = 16,
    ) -> None:
        """``identify(key)`` answers whom a key (None: none presented) identifies, handed on
        to the app (:func:`guarded_caller`), or raises the ``ServiceError`` that refuses it
        (``Unauthorized``: 401); it may block (it runs in a worker thread). ``public``:
        paths under the prefix open to all."""
        self.app = app
        self._identify = identify
        self._limits = tuple(limits)
        self._default = default_limit
        self._protected = protected_prefix
        self._public = frozenset(public)
        self._max_depth = max_json_depth

    def _limit(self, method: str, path: str) -> BodyLimit:
        for limit in self._limits:
            if limit.matches(method, path):
                return limit
        return BodyLimit(method, path, self._default)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        path: str = scope["path"]
        if path.startswith(self._protected) and path not in self._public:
            key = presented_key(headers)
            try:
                caller = await anyio.to_thread.run_sync(self._identify, key)
            except ServiceError as exc:
                await error_response(exc.status, exc.code, exc.message)(scope, receive, send)
                return
            scope.setdefault("state", {})[_CALLER] = caller
        limit = self._limit(scope["method"], path)
        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit.max_bytes):
            detail = f"the request body exceeds {limit.max_bytes} bytes"
            await error_response(413, "too_large", detail)(scope, receive, send)
            return
        watch = _BodyWatch(limit.max_bytes, limit.max_parts, headers, self._max_depth)
        started = False

        async def guarded_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                watch.see(message.get("body", b""))
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, guarded_receive, watched_send)
        except Refused as exc:  # read outside the app's handlers (a middleware)
            if started:
                raise
            response = error_response(exc.status_code, exc.code, str(exc.detail))
            await response(scope, receive, send)
