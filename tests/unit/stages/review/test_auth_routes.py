"""API keys, roles and the 401/403 answers."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from stainless.core.config import ResultsSettings
from stainless.core.db.engine import session_scope
from stainless.core.db.models import utcnow
from stainless.core.http.auth import (
    Authenticator,
    KeyRefused,
    Principal,
    Role,
    create_key,
    revoke_key,
    rotate_key,
)
from stainless.core.http.errors import Unauthorized
from stainless.core.keys import key_digest

from .conftest import ADMIN, REVIEWER, SCIENTIST, SCIENTIST_KEY, CellSpec, World


def test_keys_are_issued_once_stored_hashed_rotated_and_revoked(world: World) -> None:
    auth = Authenticator(world.engine, ResultsSettings())
    with session_scope(world.engine) as session:
        row, key = create_key(session, name="lab-lis", role=Role.SCIENTIST, days=30)
        assert key.startswith("srk_") and key not in (row.key_hash, row.key_prefix)
        assert row.key_hash == key_digest(key)
    assert auth.identify(key) == Principal("lab-lis", frozenset({Role.SCIENTIST}))
    with session_scope(world.engine) as session:
        rotated = rotate_key(session, name="lab-lis", days=30)
    with pytest.raises(Unauthorized, match="unknown"):
        auth.identify(key)  # the old key stops working at once
    assert auth.identify(rotated).name == "lab-lis"
    with session_scope(world.engine) as session:
        revoke_key(session, name="lab-lis")
    with pytest.raises(Unauthorized, match="revoked"):
        auth.identify(rotated)
    with session_scope(world.engine) as session, pytest.raises(KeyRefused, match="exists"):
        create_key(session, name="lab-lis", role=Role.ADMIN, days=1)


def test_an_expired_key_is_refused(world: World) -> None:
    auth = Authenticator(world.engine, ResultsSettings())
    with session_scope(world.engine) as session:
        row, key = create_key(session, name="old", role=Role.REVIEWER, days=1)
        row.expires_at = utcnow() - timedelta(seconds=1)
        session.add(row)
    with pytest.raises(Unauthorized, match="expired"):
        auth.identify(key)


def test_unknown_or_missing_keys_are_refused(world: World) -> None:
    auth = Authenticator(world.engine, ResultsSettings())
    assert auth.identify(SCIENTIST["X-API-Key"]) == Principal("sam", frozenset({Role.SCIENTIST}))
    for wrong in ("k3", "srk_00000002_guess", "srk__x"):
        with pytest.raises(Unauthorized, match="unknown"):
            auth.identify(wrong)
    with pytest.raises(Unauthorized, match="required"):
        auth.identify(None)
    anonymous = Authenticator(world.engine, ResultsSettings(anonymous_role="scientist"))
    assert anonymous.identify("") == Principal("anonymous", frozenset({Role.SCIENTIST}))
    with pytest.raises(Unauthorized):
        anonymous.identify("wrong")  # a wrong key is not silently anonymous


def test_any_role_reads_and_the_key_may_be_a_bearer_token(client: TestClient, world: World) -> None:
    world.slide([CellSpec("LY")])
    for headers in (REVIEWER, SCIENTIST, ADMIN, {"Authorization": f"Bearer {SCIENTIST_KEY}"}):
        assert client.get("/v1/slides", headers=headers).status_code == 200
    assert client.get("/v1/me", headers=ADMIN).json() == {"name": "ada", "role": "admin"}


def test_no_key_is_401_and_a_wrong_key_too(client: TestClient) -> None:
    missing = client.get("/v1/slides")
    assert missing.status_code == 401 and missing.json()["error"] == "unauthorized"
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    wrong = client.get("/v1/slides", headers={"X-API-Key": "rev-key-X"})
    assert wrong.status_code == 401 and wrong.json()["detail"] == "unknown API key"


def test_a_scientist_may_neither_review_nor_sign(client: TestClient, world: World) -> None:
    built = world.slide([CellSpec("LY", confidence=0.5)])
    before = world.snapshot()
    review = client.post(
        f"/v1/cells/{built.cell_ids[0]}/reviews", json={"action": "confirm"}, headers=SCIENTIST
    )
    assert review.status_code == 403
    assert (
        review.json()["detail"]
        == "reviewing and signing needs the role admin or reviewer; sam is scientist"
    )
    assert client.post(f"/v1/slides/{built.slide_id}/sign", headers=SCIENTIST).status_code == 403
    assert (
        client.post(
            f"/v1/cells/{built.cell_ids[0]}/reviews", json={"action": "confirm"}
        ).status_code
        == 401
    )
    assert world.snapshot() == before


def test_admin_may_review_and_anonymous_gets_the_configured_role(
    client: TestClient, client_for: Callable[..., TestClient], world: World
) -> None:
    built = world.slide([CellSpec("LY")])
    url = f"/v1/cells/{built.cell_ids[0]}/reviews"
    assert client.post(url, json={"action": "confirm"}, headers=ADMIN).status_code == 201
    reader = client_for(anonymous_role="scientist")
    assert reader.get("/v1/slides").status_code == 200
    assert reader.post(url, json={"action": "confirm"}).status_code == 403
    demo = client_for(anonymous_role="reviewer")
    answer = demo.post(url, json={"action": "confirm"})
    assert answer.status_code == 201 and answer.json()["reviewer"] == "anonymous"
