"""Signing in with the hospital's identity provider: ID tokens through the results app."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from stainless.core.db.models import AuditEvent
from stainless.domain.review import ReviewStatus

from ....support.oidc_provider import CLIENT_ID, Provider, forge_hs256, other_key, public_pem
from .conftest import REVIEWER, CellSpec, World

NEEDS = ReviewStatus.NEEDS_REVIEW


def _tampered(token: str) -> str:
    """The token with one character of its signature changed."""
    head, _, signature = token.rpartition(".")
    middle = len(signature) // 2
    swapped = "A" if signature[middle] != "A" else "B"
    return f"{head}.{signature[:middle]}{swapped}{signature[middle + 1 :]}"


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def oidc_client(client_for: Callable[..., TestClient], oidc_provider: Provider) -> TestClient:
    return client_for(oidc_issuer=oidc_provider.issuer, oidc_client_id=CLIENT_ID)


def test_the_sign_in_options_are_public_and_the_csp_follows_them(
    client: TestClient, oidc_client: TestClient, oidc_provider: Provider
) -> None:
    off = client.get("/v1/auth/config")  # no key
    assert off.status_code == 200 and off.json() == {"oidc": None}
    assert "connect-src" not in off.headers["Content-Security-Policy"]
    on = oidc_client.get("/v1/auth/config")
    assert on.json() == {
        "oidc": {
            "issuer": oidc_provider.issuer,
            "client_id": CLIENT_ID,
            "scopes": "openid profile email",
        }
    }
    for answer in (on, oidc_client.get("/"), oidc_client.get("/v1/slides")):
        policy = answer.headers["Content-Security-Policy"]
        assert f"connect-src 'self' {oidc_provider.issuer};" in policy
    assert oidc_provider.requests == []  # the server itself fetched nothing for that


def test_a_reviewer_signs_in_reads_reviews_and_signs(
    oidc_client: TestClient, oidc_provider: Provider, world: World
) -> None:
    built = world.slide([CellSpec("LY", NEEDS), CellSpec("SNE")])
    rita = _bearer(oidc_provider.token())
    assert oidc_client.get("/v1/me", headers=rita).json() == {"name": "rita", "role": "reviewer"}
    listed = oidc_client.get("/v1/slides", headers=rita)
    assert listed.status_code == 200 and [s["id"] for s in listed.json()] == [built.slide_id]
    review = oidc_client.post(
        f"/v1/cells/{built.cell_ids[0]}/reviews", json={"action": "confirm"}, headers=rita
    )
    assert review.status_code == 201 and review.json()["reviewer"] == "rita"
    signed = oidc_client.post(f"/v1/slides/{built.slide_id}/sign", headers=rita)
    assert signed.status_code == 200, signed.text
    assert signed.json()["signed_by"] == "rita"
    with Session(world.engine) as session:
        trail = session.exec(select(AuditEvent).where(AuditEvent.action == "sign")).all()
    assert [(event.actor, event.role) for event in trail] == [("rita", "reviewer")]


def test_an_admin_may_review_but_signs_only_when_also_a_reviewer(
    oidc_client: TestClient, oidc_provider: Provider, world: World
) -> None:
    built = world.slide([CellSpec("LY", NEEDS)])
    ada = _bearer(oidc_provider.token(preferred_username="ada", roles=["stainless-admin"]))
    url = f"/v1/cells/{built.cell_ids[0]}/reviews"
    assert oidc_client.post(url, json={"action": "confirm"}, headers=ada).status_code == 201
    assert oidc_client.get("/v1/audit", headers=ada).status_code == 200
    refused = oidc_client.post(f"/v1/slides/{built.slide_id}/sign", headers=ada)
    assert refused.status_code == 403
    assert refused.json()["detail"] == "signing needs the role reviewer; ada is admin"
    both = oidc_provider.token(
        preferred_username="ada", roles=["stainless-admin", "stainless-reviewer"]
    )
    me = oidc_client.get("/v1/me", headers=_bearer(both)).json()
    assert me == {"name": "ada", "role": "reviewer+admin"}
    signed = oidc_client.post(f"/v1/slides/{built.slide_id}/sign", headers=_bearer(both))
    assert signed.status_code == 200 and signed.json()["signed_by"] == "ada"


def test_a_scientist_token_reads_but_may_not_review(
    oidc_client: TestClient, oidc_provider: Provider, world: World
) -> None:
    built = world.slide([CellSpec("LY", NEEDS)])
    sam = _bearer(oidc_provider.token(preferred_username="sam", roles=["stainless-scientist"]))
    assert oidc_client.get(f"/v1/slides/{built.slide_id}", headers=sam).status_code == 200
    url = f"/v1/cells/{built.cell_ids[0]}/reviews"
    assert oidc_client.post(url, json={"action": "confirm"}, headers=sam).status_code == 403


BAD_TOKENS: dict[str, tuple[Callable[[Provider], str], str]] = {
    "expired": (
        lambda p: p.token(iat=int(time.time()) - 3600, exp=int(time.time()) - 60),
        "expired token",
    ),
    "wrong audience": (lambda p: p.token(aud="another-app"), "token for another audience"),
    "wrong issuer": (lambda p: p.token(iss="https://idp.elsewhere"), "token from another issuer"),
    "tampered signature": (lambda p: _tampered(p.token()), "token signature not valid"),
    "unknown kid": (lambda p: p.token(key=other_key(), kid="rotated-away"), "unknown signing key"),
    "HS256 keyed with the public key": (
        lambda p: forge_hs256(p.claims(roles=["stainless-reviewer"]), public_pem()),
        "token signed with 'HS256': only asymmetric keys are accepted",
    ),
}


@pytest.mark.parametrize("case", BAD_TOKENS)
def test_bad_tokens_are_refused_before_the_body_is_read(
    case: str, oidc_client: TestClient, oidc_provider: Provider, world: World
) -> None:
    built = world.slide([CellSpec("LY", NEEDS)])
    make, reason = BAD_TOKENS[case]
    headers = _bearer(make(oidc_provider))
    before = world.snapshot()
    for answer in (
        oidc_client.get("/v1/slides", headers=headers),
        oidc_client.post(f"/v1/slides/{built.slide_id}/sign", headers=headers),
    ):
        assert answer.status_code == 401, answer.text
        assert answer.json() == {"error": "unauthorized", "detail": reason}
        assert answer.headers["WWW-Authenticate"] == "Bearer"
    assert world.snapshot() == before


def test_a_token_without_a_stainless_role_is_forbidden_naming_the_claim(
    client_for: Callable[..., TestClient], oidc_provider: Provider
) -> None:
    client = client_for(
        oidc_issuer=oidc_provider.issuer,
        oidc_client_id=CLIENT_ID,
        oidc_roles_claim="realm_access.roles",
    )
    token = oidc_provider.token(realm_access={"roles": ["offline_access"]})
    answer = client.get("/v1/slides", headers=_bearer(token))
    assert answer.status_code == 403
    assert answer.json()["detail"] == (
        "rita holds no Stainless role: the token's 'realm_access.roles' claim names none of "
        "stainless-reviewer, stainless-scientist, stainless-admin"
    )


def test_an_unreachable_provider_is_503(
    client_for: Callable[..., TestClient], oidc_provider: Provider
) -> None:
    token = oidc_provider.token()
    client = client_for(oidc_issuer=oidc_provider.issuer, oidc_client_id=CLIENT_ID)
    oidc_provider.stop()
    answer = client.get("/v1/slides", headers=_bearer(token))
    assert answer.status_code == 503
    assert answer.json()["error"] == "unavailable"
    assert answer.json()["detail"].startswith("the identity provider cannot be reached")
    assert client.get("/v1/slides", headers=REVIEWER).status_code == 200  # keys still work
    assert client.get("/v1/auth/config").status_code == 200


def test_a_token_is_an_unknown_key_while_oidc_is_off(
    client: TestClient, oidc_provider: Provider
) -> None:
    answer = client.get("/v1/slides", headers=_bearer(oidc_provider.token()))
    assert answer.status_code == 401 and answer.json()["detail"] == "unknown API key"
    assert oidc_provider.requests == []


def test_keys_keep_working_beside_tokens(oidc_client: TestClient) -> None:
    assert oidc_client.get("/v1/me", headers=REVIEWER).json() == {
        "name": "rita",
        "role": "reviewer",
    }
    wrong = oidc_client.get("/v1/slides", headers={"X-API-Key": "srk_1234_a.b.c"})
    assert wrong.status_code == 401 and wrong.json()["detail"] == "unknown API key"
