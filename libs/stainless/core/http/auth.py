"""Who may call the results API: API keys of a name and a role, kept in the database, and
(when ``settings.results.oidc_issuer`` is set) ID tokens of the hospital's identity provider.

``stainless keys create NAME --role ROLE`` issues a key (``srk_…``), shown once; only its
hash is stored, with an expiry; ``rotate`` replaces it, ``revoke`` ends it (every change
in the audit trail). A request carries its key in ``X-API-Key`` or as ``Authorization:
Bearer <key>``. Without a key it is refused (401) unless ``settings.results.anonymous_role``
names the role anonymous callers get (the embedded demo only). A credential of three
dot-separated parts is a token (:mod:`stainless.core.http.oidc`): its user holds the Stainless
roles its roles claim names with the prefix (``stainless-reviewer``), one or several.

Roles: any role may read; reviewing needs ``reviewer``; starting training needs
``scientist``; ``admin`` may do all of that and read the audit trail. Signing is a
reviewer's own act: it needs ``reviewer``, which ``admin`` alone does not give.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from stainless.core.audit import Actor
from stainless.core.config import ResultsSettings
from stainless.core.db.models import ApiKey, utcnow
from stainless.core.http.errors import Forbidden, Unauthorized
from stainless.core.http.guard import guarded_caller
from stainless.core.http.oidc import TokenVerifier
from stainless.core.keys import digest_matches, issue_key, lookup_of

KEY_KIND = "srk"
"""The first part of every results-API key."""


class Role(StrEnum):
    REVIEWER = "reviewer"
    SCIENTIST = "scientist"
    ADMIN = "admin"


@dataclass(frozen=True)
class Principal:
    """Who calls: a key's holder (its one role) or a signed-in user (the provider's roles)."""

    name: str
    roles: frozenset[Role]

    @property
    def role(self) -> str:
        """The roles as text in :class:`Role` order (``reviewer+admin``): messages, audit."""
        return "+".join(role.value for role in Role if role in self.roles)


ANONYMOUS = "anonymous"


class KeyRefused(ValueError):
    """A key action that cannot be done (unknown or duplicate name, bad role or lifetime)."""


def create_key(session: Session, *, name: str, role: Role, days: int) -> tuple[ApiKey, str]:
    """A new key for ``name`` valid ``days`` days; the row and the key (shown this once)."""
    if not 1 <= days <= 3650:
        raise KeyRefused(f"a key lives 1 to 3650 days, not {days}")
    if session.exec(select(ApiKey).where(ApiKey.name == name)).first() is not None:
        raise KeyRefused(f"a key named {name!r} already exists: rotate it")
    issued = issue_key(KEY_KIND)
    row = ApiKey(
        name=name,
        role=Role(role).value,
        key_prefix=issued.lookup,
        key_hash=issued.digest,
        expires_at=utcnow() + timedelta(days=days),
    )
    session.add(row)
    session.flush()
    return row, issued.key


def _named(session: Session, name: str) -> ApiKey:
    row = session.exec(select(ApiKey).where(ApiKey.name == name)).first()
    if row is None:
        raise KeyRefused(f"no key named {name!r}")
    return row


def rotate_key(session: Session, *, name: str, days: int) -> str:
    """Replace the key of ``name`` (the old one stops working at once), valid ``days`` days."""
    if not 1 <= days <= 3650:
        raise KeyRefused(f"a key lives 1 to 3650 days, not {days}")
    row = _named(session, name)
    issued = issue_key(KEY_KIND)
    row.key_prefix, row.key_hash, row.revoked_at = issued.lookup, issued.digest, None
    row.expires_at = utcnow() + timedelta(days=days)
    session.add(row)
    return issued.key


def revoke_key(session: Session, *, name: str) -> None:
    row = _named(session, name)
    row.revoked_at = utcnow()
    session.add(row)


def list_keys(session: Session) -> list[ApiKey]:
    return list(session.exec(select(ApiKey).order_by(col(ApiKey.name))).all())


def is_token(credential: str) -> bool:
    """Whether a credential has a token's shape (three dot-separated parts), not a key's."""
    return credential.count(".") == 2 and not credential.startswith(f"{KEY_KIND}_")


class Authenticator:
    """Maps a presented credential to its principal: a stored, unrevoked, unexpired key's,
    or a valid token's user with the Stainless roles it holds."""

    def __init__(self, engine: Engine, settings: ResultsSettings) -> None:
        self._engine = engine
        role = settings.anonymous_role
        self._anonymous = Principal(ANONYMOUS, frozenset({Role(role)})) if role else None
        self._tokens = TokenVerifier(settings) if settings.oidc_issuer else None
        self._prefix = settings.oidc_role_prefix

    @property
    def anonymous(self) -> Principal | None:
        return self._anonymous

    def identify(self, key: str | None) -> Principal:
        """The principal of ``key`` (None: none presented; an API key or a token).

        Raises:
            Unauthorized: no key, or one that is not valid.
            Forbidden: a token without a role.
            Unavailable: the identity provider cannot be reached.
        """
        if not key:
            if self._anonymous is not None:
                return self._anonymous
            raise Unauthorized("an API key is required (X-API-Key or Authorization: Bearer)")
        if self._tokens is not None and is_token(key):
            return self._token_user(self._tokens, key)
        return self._key_holder(key)

    def _token_user(self, tokens: TokenVerifier, token: str) -> Principal:
        user = tokens.user(token)
        roles = frozenset(role for role in Role if role.value in user.roles)
        if not roles:
            expected = ", ".join(self._prefix + role.value for role in Role)
            raise Forbidden(
                f"{user.name} holds no Stainless role: the token's {tokens.roles_claim!r} "
                f"claim names none of {expected}"
            )
        return Principal(user.name, roles)

    def _key_holder(self, key: str) -> Principal:
        lookup = lookup_of(key, KEY_KIND)
        if lookup is not None:
            with Session(self._engine) as session:
                rows = session.exec(select(ApiKey).where(ApiKey.key_prefix == lookup)).all()
            for row in rows:
                if not digest_matches(row.key_hash, key):
                    continue
                if row.revoked_at is not None:
                    raise Unauthorized("revoked API key")
                expires = row.expires_at
                if (
                    expires if expires.tzinfo else expires.replace(tzinfo=utcnow().tzinfo)
                ) <= utcnow():
                    raise Unauthorized("expired API key: rotate it")
                return Principal(row.name, frozenset({Role(row.role)}))
        raise Unauthorized("unknown API key")


READ_ROLES = frozenset(Role)
REVIEW_ROLES = frozenset({Role.REVIEWER, Role.ADMIN})
SCIENCE_ROLES = frozenset({Role.SCIENTIST, Role.ADMIN})

_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="A results API key.")
_bearer = HTTPBearer(
    auto_error=False, description="The same key, or an ID token of the identity provider."
)


def current_principal(
    request: Request,
    key: Annotated[str | None, Depends(_api_key)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """Whom the request's guard identified, or (on a path it does not guard) its key does."""
    who = guarded_caller(request)
    if isinstance(who, Principal):
        return who
    authenticator: Authenticator = request.app.state.authenticator
    return authenticator.identify(key or (bearer.credentials if bearer else None))


def require(roles: frozenset[Role], *, doing: str, admin: bool = True) -> Callable[..., Principal]:
    """A dependency admitting principals holding a role in ``roles`` (or admin, unless
    ``admin`` is false: a signature is a reviewer's own act)."""
    admitted = roles | {Role.ADMIN} if admin else roles

    def dependency(who: Annotated[Principal, Depends(current_principal)]) -> Principal:
        if who.roles & admitted:
            return who
        allowed = " or ".join(sorted(r.value for r in admitted))
        raise Forbidden(f"{doing} needs the role {allowed}; {who.name} is {who.role}")

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
    return Actor(who.name, who.role, request.client.host if request.client else None)
