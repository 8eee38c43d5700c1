"""API keys, roles and the 401/403 answers."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from stainless.core.config import ResultsSettings
from stainless.core.http.auth import Authenticator, Principal, Role, parse_api_keys
from stainless.core.http.errors import Unauthorized

from .conftest import ADMIN, REVIEWER, SCIENTIST, CellSpec, World


def test_entries_are_parsed_and_keys_may_hold_colons() -> None:
    parsed = parse_api_keys(" rita:reviewer:k1 , ,ada:admin:a:b:c")
    assert parsed == [
        (Principal("rita", Role.REVIEWER), "k1"),
        (Principal("ada", Role.ADMIN), "a:b:c"),
    ]
    assert parse_api_keys("") == []


@pytest.mark.parametrize("raw", ["rita:boss:k1", "rita:reviewer:", ":reviewer:k", "justakey"])
def test_bad_entries_are_refused(raw: str) -> None:
    with pytest.raises(ValueError, match="entry 1"):
        parse_api_keys(raw)


def test_keys_identify_principals_and_unknown_or_missing_keys_are_refused() -> None:
    auth = Authenticator(ResultsSettings(api_keys=SecretStr("rita:reviewer:k1,sam:scientist:k2")))
    assert auth.identify("k2") == Principal("sam", Role.SCIENTIST)
    with pytest.raises(Unauthorized, match="unknown"):
        auth.identify("k3")
    with pytest.raises(Unauthorized, match="required"):
        auth.identify(None)
    anonymous = Authenticator(ResultsSettings(anonymous_role="scientist"))
    assert anonymous.identify("") == Principal("anonymous", Role.SCIENTIST)
    with pytest.raises(Unauthorized):
        anonymous.identify("wrong")  # a wrong key is not silently anonymous


def test_a_bad_key_setting_stops_the_app_from_starting(
    client_for: Callable[..., TestClient],
) -> None:
    with pytest.raises(ValueError, match="expected one of"):
        client_for(api_keys=SecretStr("rita:root:k"))


def test_any_role_reads_and_the_key_may_be_a_bearer_token(client: TestClient, world: World) -> None:
    world.slide([CellSpec("LY")])
    for headers in (REVIEWER, SCIENTIST, ADMIN, {"Authorization": "Bearer sci-key-2"}):
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
