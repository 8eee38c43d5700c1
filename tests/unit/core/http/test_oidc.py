"""ID tokens checked against a real provider on loopback: keys, claims, roles and outages."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest

from stainless.core.config import ResultsSettings
from stainless.core.http.errors import Unauthorized, Unavailable
from stainless.core.http.oidc import TokenUser, TokenVerifier, issuer_origin

from ....support.oidc_provider import CLIENT_ID, Provider, forge_hs256, other_key, public_pem

DISCOVERY = "/.well-known/openid-configuration"


def _verifier(issuer: str, **settings: Any) -> TokenVerifier:
    return TokenVerifier(ResultsSettings(oidc_issuer=issuer, oidc_client_id=CLIENT_ID, **settings))


@pytest.fixture
def verifier(oidc_provider: Provider) -> TokenVerifier:
    return _verifier(oidc_provider.issuer)


def _tampered(token: str) -> str:
    """The token with its payload swapped for one naming an admin (signature kept)."""
    header, _, signature = token.split(".")
    claims = jwt.decode(token, options={"verify_signature": False})
    payload = base64.urlsafe_b64encode(
        json.dumps({**claims, "roles": ["stainless-admin"]}).encode()
    )
    return f"{header}.{payload.rstrip(b'=').decode()}.{signature}"


def test_a_valid_token_names_its_user_and_its_prefixed_roles(
    oidc_provider: Provider, verifier: TokenVerifier
) -> None:
    roles = ["stainless-reviewer", "stainless-admin", "offline_access", "reviewer"]
    assert verifier.user(oidc_provider.token(roles=roles)) == TokenUser(
        "rita", frozenset({"reviewer", "admin"})
    )
    nameless = oidc_provider.token(preferred_username=None, sub="user-7")
    assert verifier.user(nameless).name == "user-7"  # the name claim falls back to sub
    assert verifier.user(oidc_provider.token(roles="stainless-scientist uma")).roles == {
        "scientist"
    }


def test_the_roles_claim_may_be_a_path_or_a_name_with_dots(oidc_provider: Provider) -> None:
    keycloak = _verifier(oidc_provider.issuer, oidc_roles_claim="realm_access.roles")
    token = oidc_provider.token(roles=None, realm_access={"roles": ["stainless-reviewer"]})
    assert keycloak.user(token).roles == {"reviewer"}
    auth0 = _verifier(oidc_provider.issuer, oidc_roles_claim="https://lab.example/roles")
    token = oidc_provider.token(roles=None, **{"https://lab.example/roles": ["stainless-admin"]})
    assert auth0.user(token).roles == {"admin"}
    assert keycloak.user(oidc_provider.token()).roles == frozenset()  # no such claim


def test_the_audience_setting_replaces_the_client_id(oidc_provider: Provider) -> None:
    api = _verifier(oidc_provider.issuer, oidc_audience="stainless-api")
    assert api.user(oidc_provider.token(aud=["stainless-api", "other"])).name == "rita"
    with pytest.raises(Unauthorized, match=r"^token for another audience$"):
        api.user(oidc_provider.token())


REFUSALS: dict[str, tuple[Callable[[Provider], str], str]] = {
    "expired": (
        lambda p: p.token(iat=int(time.time()) - 600, exp=int(time.time()) - 31),
        "^expired token$",
    ),
    "another audience": (lambda p: p.token(aud="someone-else"), "^token for another audience$"),
    "another issuer": (
        lambda p: p.token(iss="https://evil.example"),
        "^token from another issuer$",
    ),
    "tampered": (lambda p: _tampered(p.token()), "^token signature not valid$"),
    "signed by another key under the provider's kid": (
        lambda p: p.token(key=other_key()),
        "^token signature not valid$",
    ),
    "unknown kid": (lambda p: p.token(key=other_key(), kid="elsewhere"), "^unknown signing key$"),
    "HS256 keyed with the public key": (
        lambda p: forge_hs256(p.claims(roles=["stainless-admin"]), public_pem()),
        "only asymmetric",
    ),
    "alg none": (
        lambda p: jwt.encode(p.claims(), None, algorithm="none", headers={"kid": "test-key-1"}),
        "only asymmetric",
    ),
    "no iat": (lambda p: p.token(iat=None), "^token without the iat claim$"),
    "no exp": (lambda p: p.token(exp=None), "^token without the exp claim$"),
    "issued in the future": (
        lambda p: p.token(iat=int(time.time()) + 120),
        "^token not valid yet$",
    ),
    "not a token": (lambda p: "a.b.c", "^malformed token$"),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_tokens_that_are_not_valid_are_refused_with_the_reason(
    case: str, oidc_provider: Provider, verifier: TokenVerifier
) -> None:
    make, reason = REFUSALS[case]
    with pytest.raises(Unauthorized, match=reason):
        verifier.user(make(oidc_provider))


def test_a_token_just_past_its_expiry_is_within_the_leeway(
    oidc_provider: Provider, verifier: TokenVerifier
) -> None:
    token = oidc_provider.token(iat=int(time.time()) - 600, exp=int(time.time()) - 10)
    assert verifier.user(token).name == "rita"


def test_discovery_and_keys_are_fetched_once(
    oidc_provider: Provider, verifier: TokenVerifier
) -> None:
    assert oidc_provider.requests == []  # nothing fetched before the first token
    for _ in range(3):
        verifier.user(oidc_provider.token())
    assert oidc_provider.requests == [DISCOVERY, "/jwks"]
    oidc_provider.stop()  # the keys in hand outlive an outage of the provider
    assert verifier.user(oidc_provider.token()).name == "rita"


def test_an_unreachable_provider_is_unavailable_not_unauthorized(oidc_provider: Provider) -> None:
    token = oidc_provider.token()
    verifier = _verifier(oidc_provider.issuer)
    oidc_provider.stop()
    with pytest.raises(Unavailable, match="cannot be reached"):
        verifier.user(token)
    oidc_provider.start()  # back (on another port): a new verifier of it works
    assert _verifier(oidc_provider.issuer).user(oidc_provider.token()).name == "rita"


def test_unreachable_keys_are_unavailable_too(
    oidc_provider: Provider, free_port: Callable[[], int], monkeypatch: pytest.MonkeyPatch
) -> None:
    nowhere = {**oidc_provider.discovery(), "jwks_uri": f"http://127.0.0.1:{free_port()}/jwks"}
    monkeypatch.setattr(oidc_provider, "discovery", lambda: nowhere)
    with pytest.raises(Unavailable, match="keys cannot be read"):
        _verifier(oidc_provider.issuer).user(oidc_provider.token())


def test_a_provider_naming_another_issuer_is_refused(oidc_provider: Provider) -> None:
    impostor = _verifier(oidc_provider.issuer + "/")  # not the issuer it names itself
    with pytest.raises(Unavailable, match="names itself"):
        impostor.user(oidc_provider.token(iss=oidc_provider.issuer + "/"))


def test_the_issuer_origin_is_scheme_host_and_port() -> None:
    assert issuer_origin("https://IdP.example:8443/realms/lab") == "https://idp.example:8443"
    assert issuer_origin("https://login.example/tenant/v2.0/") == "https://login.example"
