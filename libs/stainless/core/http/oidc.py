"""ID tokens of the hospital's identity provider (OpenID Connect) as results-API credentials.

The review page signs a user in at the provider (authorization code with PKCE) and sends
the ID token it gets as ``Authorization: Bearer``. :class:`TokenVerifier` checks it against
the provider's keys: the discovery document ``{issuer}/.well-known/openid-configuration``
(fetched on first use and kept; its ``issuer`` must be the configured one) names the JWKS,
whose key set is cached for five minutes and fetched again for an unknown ``kid`` at most
every 30 s. A token is accepted when an asymmetric algorithm signed it with one of those
keys, the issuer issued it for the audience, and it has not expired (30 s leeway). Its
roles are the entries of the roles claim that carry the prefix, without it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
from jwt import PyJWKClient, PyJWKClientConnectionError, PyJWKClientError, PyJWKSetError

from stainless.core.config import ResultsSettings
from stainless.core.http.errors import Unauthorized, Unavailable

__all__ = ["ASYMMETRIC", "TokenUser", "TokenVerifier", "issuer_origin"]

ASYMMETRIC = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
"""The only algorithms a token may be signed with (never HS*, never none)."""

LEEWAY_S = 30
TIMEOUT_S = 5.0
JWKS_LIFESPAN_S = 300.0
MAX_NAME = 128  # as long as a reviewer's or signer's name may be in the database
REQUIRED = ["exp", "iat", "iss", "aud"]

_REASONS: tuple[tuple[type[jwt.PyJWTError], str], ...] = (
    (jwt.ExpiredSignatureError, "expired token"),
    (jwt.InvalidAudienceError, "token for another audience"),
    (jwt.InvalidIssuerError, "token from another issuer"),
    (jwt.InvalidSignatureError, "token signature not valid"),
    (jwt.InvalidKeyError, "token signature not valid"),
    (jwt.ImmatureSignatureError, "token not valid yet"),
)


@dataclass(frozen=True)
class TokenUser:
    """Whom a valid token names, and its roles: the prefixed ones, prefix removed."""

    name: str
    roles: frozenset[str]


def issuer_origin(issuer: str) -> str:
    """``scheme://host[:port]`` of the issuer: where the review page may fetch from."""
    url = urlsplit(issuer)
    return f"{url.scheme}://{url.netloc.rpartition('@')[2].lower()}"


def _algorithm(token: str) -> str:
    try:
        algorithm = jwt.get_unverified_header(token).get("alg")
    except jwt.PyJWTError:
        raise Unauthorized("malformed token") from None
    if not isinstance(algorithm, str) or algorithm not in ASYMMETRIC:
        raise Unauthorized(f"token signed with {algorithm!r}: only asymmetric keys are accepted")
    return algorithm


def _reason(exc: jwt.PyJWTError) -> str:
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"token without the {exc.claim} claim"
    for kind, reason in _REASONS:
        if isinstance(exc, kind):
            return reason
    return f"token not valid: {exc}"


def _claim(claims: dict[str, Any], path: str) -> Any:
    """The claim named ``path``, else the one its dots lead to (``realm_access.roles``)."""
    if path in claims:
        return claims[path]
    value: Any = claims
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


class TokenVerifier:
    """Verifies ID tokens of the issuer in ``settings`` (see the module)."""

    def __init__(self, settings: ResultsSettings) -> None:
        if not (settings.oidc_issuer and settings.oidc_client_id):
            raise ValueError("a token verifier needs oidc_issuer and oidc_client_id")
        self._issuer = settings.oidc_issuer
        self._audience = settings.oidc_audience or settings.oidc_client_id
        self._name_claim = settings.oidc_name_claim
        self._prefix = settings.oidc_role_prefix
        self.roles_claim = settings.oidc_roles_claim
        self._lock = threading.Lock()
        self._jwks: PyJWKClient | None = None

    def user(self, token: str) -> TokenUser:
        """The user of a valid token; raises :class:`Unauthorized` with the reason it is
        not, or :class:`Unavailable` when the provider cannot be reached."""
        claims = self.claims(token)
        return TokenUser(self._name(claims), self._roles(claims))

    def claims(self, token: str) -> dict[str, Any]:
        """The claims of a valid token (see :meth:`user`)."""
        algorithm = _algorithm(token)
        key = self._signing_key(token)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self._audience,
                issuer=self._issuer,
                leeway=LEEWAY_S,
                options={"require": REQUIRED},
            )
        except jwt.PyJWTError as exc:
            raise Unauthorized(_reason(exc)) from None
        return claims

    def _signing_key(self, token: str) -> Any:
        try:
            return self._key_set().get_signing_key_from_jwt(token).key
        except (PyJWKClientConnectionError, PyJWKSetError, ValueError) as exc:
            raise Unavailable(f"the identity provider's keys cannot be read: {exc}") from None
        except PyJWKClientError:
            raise Unauthorized("unknown signing key") from None

    def _key_set(self) -> PyJWKClient:
        with self._lock:
            if self._jwks is None:
                self._jwks = PyJWKClient(
                    self._jwks_uri(), lifespan=JWKS_LIFESPAN_S, timeout=TIMEOUT_S
                )
            return self._jwks

    def _jwks_uri(self) -> str:
        """The provider's JWKS address, from its discovery document."""
        url = self._issuer.rstrip("/") + "/.well-known/openid-configuration"
        try:
            answer = httpx.get(url, timeout=TIMEOUT_S)
            answer.raise_for_status()
            document = answer.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise Unavailable(f"the identity provider cannot be reached: {exc}") from None
        named = document.get("issuer") if isinstance(document, dict) else None
        if named != self._issuer:
            raise Unavailable(f"the identity provider names itself {named!r}, not {self._issuer!r}")
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str) or urlsplit(jwks_uri).scheme not in {
            "https",
            urlsplit(self._issuer).scheme,
        }:
            raise Unavailable(f"the identity provider names no usable jwks_uri: {jwks_uri!r}")
        return jwks_uri

    def _name(self, claims: dict[str, Any]) -> str:
        for claim in (self._name_claim, "sub"):
            value = claims.get(claim)
            if isinstance(value, str) and value.strip():
                if len(value) > MAX_NAME:
                    raise Unauthorized(f"the token's {claim} is longer than {MAX_NAME} characters")
                return value
        raise Unauthorized(f"token names no user ({self._name_claim} or sub)")

    def _roles(self, claims: dict[str, Any]) -> frozenset[str]:
        value = _claim(claims, self.roles_claim)
        entries = value.split() if isinstance(value, str) else value
        if not isinstance(entries, list):
            return frozenset()
        prefix = self._prefix
        return frozenset(
            entry.removeprefix(prefix)
            for entry in entries
            if isinstance(entry, str) and entry.startswith(prefix)
        )
