"""A small OpenID Connect provider on loopback, for tests: a real HTTP server.

It serves discovery and its JWKS (one RSA key), an authorization endpoint that approves at
once as :attr:`Provider.user` and sends the browser back with a code, and a token endpoint
that checks the code's client, redirect URI and PKCE verifier (S256) before it answers with
an ID token carrying the nonce. :meth:`Provider.token` mints tokens at will, good or bad.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

CLIENT_ID = "stainless-review"
KID = "test-key-1"


@cache
def signing_key() -> rsa.RSAPrivateKey:
    """The provider's RSA key (one per test session: generating one takes a while)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def other_key() -> rsa.RSAPrivateKey:
    """A key the provider does not publish."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem() -> bytes:
    return (
        signing_key()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge_hs256(claims: dict[str, Any], secret: bytes, kid: str = KID) -> str:
    """A token "signed" with HS256 and ``secret`` (the algorithm-confusion attack)."""
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    body = _b64(json.dumps(claims).encode())
    signature = hmac.new(secret, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{_b64(signature)}"


@dataclass
class _Grant:
    client_id: str
    redirect_uri: str
    challenge: str
    nonce: str | None


@dataclass
class Provider:
    """The provider; :attr:`issuer` is its URL once :meth:`start` has run."""

    client_id: str = CLIENT_ID
    user: dict[str, Any] = field(
        default_factory=lambda: {"preferred_username": "rita", "roles": ["stainless-reviewer"]}
    )
    issuer: str = ""
    requests: list[str] = field(default_factory=list)  # the paths asked for, in order
    _grants: dict[str, _Grant] = field(default_factory=dict)
    _server: ThreadingHTTPServer | None = None

    def start(self) -> Provider:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server = server
        self.issuer = f"http://127.0.0.1:{server.server_address[1]}"
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def claims(self, **changes: Any) -> dict[str, Any]:
        """A valid ID token's claims for :attr:`user`; a change to None drops the claim."""
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": self.client_id,
            "sub": "0b7c6f0e-user",
            "iat": now,
            "exp": now + 300,
            **self.user,
            **changes,
        }
        return {name: value for name, value in claims.items() if value is not None}

    def token(
        self,
        key: rsa.RSAPrivateKey | None = None,
        kid: str = KID,
        algorithm: str = "RS256",
        **changes: Any,
    ) -> str:
        """An ID token signed by the provider's key (or ``key``), with :meth:`claims`."""
        return jwt.encode(
            self.claims(**changes),
            key or signing_key(),
            algorithm=algorithm,
            headers={"kid": kid},
        )

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "jwks_uri": f"{self.issuer}/jwks",
            "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token",
            "response_types_supported": ["code"],
            "code_challenge_methods_supported": ["S256"],
            "id_token_signing_alg_values_supported": ["RS256"],
        }

    def jwks(self) -> dict[str, Any]:
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(signing_key().public_key(), as_dict=True)
        return {"keys": [{**jwk, "kid": KID, "use": "sig", "alg": "RS256"}]}

    def authorize(self, query: dict[str, str]) -> str:
        """Approve at once: where the browser goes next (the redirect URI with a code)."""
        if query.get("client_id") != self.client_id or query.get("response_type") != "code":
            raise ValueError("unknown client or not the code flow")
        if query.get("code_challenge_method") != "S256" or not query.get("code_challenge"):
            raise ValueError("PKCE (S256) is required")
        code = secrets.token_urlsafe(16)
        self._grants[code] = _Grant(
            query["client_id"], query["redirect_uri"], query["code_challenge"], query.get("nonce")
        )
        back = {"code": code, "state": query.get("state", "")}
        return f"{query['redirect_uri']}?{urlencode(back)}"

    def exchange(self, form: dict[str, str]) -> dict[str, Any]:
        """The token endpoint: a code once, for its client, redirect URI and PKCE verifier."""
        grant = self._grants.pop(form.get("code", ""), None)
        if grant is None or form.get("grant_type") != "authorization_code":
            raise ValueError("invalid_grant")
        challenge = _b64(hashlib.sha256(form.get("code_verifier", "").encode()).digest())
        if (form.get("client_id"), form.get("redirect_uri"), challenge) != (
            grant.client_id,
            grant.redirect_uri,
            grant.challenge,
        ):
            raise ValueError("invalid_grant")
        return {"id_token": self.token(nonce=grant.nonce), "token_type": "Bearer"}


def _handler(provider: Provider) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _answer(self, status: int, body: dict[str, Any] | None = None, **headers: str) -> None:
            data = json.dumps(body).encode() if body is not None else b""
            self.send_response(status)
            self.send_header("Access-Control-Allow-Origin", "*")  # the page's fetches (CORS)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            provider.requests.append(url.path)
            if url.path == "/.well-known/openid-configuration":
                self._answer(200, provider.discovery())
            elif url.path == "/jwks":
                self._answer(200, provider.jwks())
            elif url.path == "/authorize":
                query = {name: values[0] for name, values in parse_qs(url.query).items()}
                try:
                    self._answer(302, Location=provider.authorize(query))
                except (KeyError, ValueError) as exc:
                    self._answer(400, {"error": str(exc)})
            else:
                self._answer(404, {"error": "not_found"})

        def do_POST(self) -> None:
            provider.requests.append(self.path)
            length = int(self.headers.get("Content-Length", "0"))
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
            try:
                self._answer(200, provider.exchange(form))
            except ValueError as exc:
                self._answer(400, {"error": str(exc)})

    return Handler
