"""Security headers on every answer of an HTTP app (the API, the review page, refusals)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["SECURITY_HEADERS", "SecurityHeaders", "security_headers"]


def security_headers(connect_src: Sequence[str] = ()) -> dict[str, str]:
    """The headers; ``connect_src``: origins the page may also fetch from (the identity
    provider of the review page's sign-in)."""
    if any(re.search(r"[\s;,']", origin) for origin in connect_src):
        raise ValueError(f"not an origin for connect-src: {list(connect_src)}")
    connect = f"connect-src 'self' {' '.join(connect_src)}; " if connect_src else ""
    return {
        # Scripts, styles and pages from this origin only; images also as blob:/data: URLs
        # (the review page fetches crops with its key); never framed (clickjacking), no plugins.
        "Content-Security-Policy": f"default-src 'self'; {connect}img-src 'self' blob: data:; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",  # patient data stays out of shared and browser caches
    }


SECURITY_HEADERS = security_headers()


class SecurityHeaders:
    """ASGI layer adding :func:`security_headers` where the app set none of its own."""

    def __init__(self, app: ASGIApp, *, connect_src: Sequence[str] = ()) -> None:
        self.app = app
        self._headers = security_headers(connect_src)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in self._headers.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)
