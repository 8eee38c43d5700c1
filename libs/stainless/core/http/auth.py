"""Who may call the results API: API keys mapped to a name and a role.

Keys come from ``settings.results.api_keys`` as comma-separated
``name:role:key`` entries. A request carries its key in ``X-API-Key`` or as
``Authorization: Bearer <key>``. Without a key it is refused (401) unless
``settings.results.anonymous_role`` names the role anonymous callers get.

Roles: any role may read; reviewing needs ``reviewer``; starting training needs
``scientist``; ``admin`` may do all of that and read the audit trail. Signing is a
reviewer's own act: an admin key cannot sign.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from stainless.core.audit import Actor
from stainless.core.config import ResultsSettings
from stainless.core.http.errors import Forbidden, Unauthorized


class Role(StrEnum):
    REVIEWER = "reviewer"
    SCIENTIST = "scientist"
    ADMIN = "admin"


@dataclass(frozen=True)
class Principal:
    name: str
    role: Role


ANONYMOUS = "anonymous"


def parse_api_keys(raw: str) -> list[tuple[Principal, str]]:
    """``name:role:key,...`` as (principal, key) pairs; raises ``ValueError`` on a bad entry.

    The key is everything after the second colon, so keys may contain colons.
    """
    entries: list[tuple[Principal, str]] = []
    for position, entry in enumerate(part.strip() for part in raw.split(",")):
        if not entry:
            continue
        name, _, rest = entry.partition(":")
        role, _, key = rest.partition(":")
        if not name.strip() or not key.strip():
            raise ValueError(f"API key entry {position + 1} is not name:role:key")
        try:
            parsed = Role(role.strip())
        except ValueError:
            roles = ", ".join(r.value for r in Role)
            raise ValueError(
                f"API key entry {position + 1} ({name.strip()}) has role {role.strip()!r}; "
                f"expected one of {roles}"
            ) from None
        entries.append((Principal(name.strip(), parsed), key.strip()))
    return entries


class Authenticator:
    """Maps a presented key to its principal, comparing in constant time."""

    def __init__(self, settings: ResultsSettings) -> None:
        self._keys = [
            (principal, key.encode())
            for principal, key in parse_api_keys(settings.api_keys.get_secret_value())
        ]
        role = settings.anonymous_role
        self._anonymous = Principal(ANONYMOUS, Role(role)) if role else None

    @property
    def anonymous(self) -> Principal | None:
        return self._anonymous

    def refusal(self, key: str | None) -> str | None:
        """Why ``key`` (None: none presented) identifies nobody, or None when it does."""
        try:
            self.identify(key)
        except Unauthorized as exc:
            return exc.message
        return None

    def identify(self, key: str | None) -> Principal:
        """The principal of ``key``; raises :class:`Unauthorized` when missing or unknown."""
        if not key:
            if self._anonymous is not None:
                return self._anonymous
            raise Unauthorized("an API key is required (X-API-Key or Authorization: Bearer)")
        presented = key.encode()
        found: Principal | None = None
        for principal, expected in self._keys:  # every key is compared: no early exit
            if hmac.compare_digest(presented, expected) and found is None:
                found = principal
        if found is None:
            raise Unauthorized("unknown API key")
        return found


READ_ROLES = frozenset(Role)
REVIEW_ROLES = frozenset({Role.REVIEWER, Role.ADMIN})
SCIENCE_ROLES = frozenset({Role.SCIENTIST, Role.ADMIN})

_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="A results API key.")
_bearer = HTTPBearer(auto_error=False, description="The same key as a bearer token.")


def current_principal(
    request: Request,
    key: Annotated[str | None, Depends(_api_key)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    authenticator: Authenticator = request.app.state.authenticator
    return authenticator.identify(key or (bearer.credentials if bearer else None))


def require(roles: frozenset[Role], *, doing: str, admin: bool = True) -> Callable[..., Principal]:
    """A dependency admitting principals whose role is in ``roles`` (and admin, unless
    ``admin`` is false: a signature is a reviewer's own act)."""
    admitted = roles | {Role.ADMIN} if admin else roles

    def dependency(who: Annotated[Principal, Depends(current_principal)]) -> Principal:
        if who.role in admitted:
            return who
        allowed = " or ".join(sorted(r.value for r in admitted))
        raise Forbidden(f"{doing} needs the role {allowed}; {who.name} is {who.role.value}")

    return dependency


Reader = Annotated[Principal, Depends(require(READ_ROLES, doing="reading results"))]
Reviewer = Annotated[Principal, Depends(require(REVIEW_ROLES, doing="reviewing and signing"))]
Scientist = Annotated[Principal, Depends(require(SCIENCE_ROLES, doing="starting training"))]
Signer = Annotated[
    Principal, Depends(require(frozenset({Role.REVIEWER}), doing="signing", admin=False))
]
Admin = Annotated[Principal, Depends(require(frozenset(), doing="reading the audit trail"))]


def actor(request: Request, who: Principal) -> Actor:
    """Who a request acts as, for the audit trail."""
    return Actor(who.name, who.role.value, request.client.host if request.client else None)
