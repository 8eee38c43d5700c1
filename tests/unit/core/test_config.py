from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from stainless.core.config import (
    BusBackend,
    ResultsSettings,
    Settings,
    SettingsError,
    StoreBackend,
    iter_setting_fields,
    load_settings,
)

SETTINGS_DOC = Path(__file__).resolve().parents[3] / "docs" / "reference" / "settings.md"


def test_defaults_are_the_embedded_stand_ins() -> None:
    settings = load_settings()
    assert settings.store.backend is StoreBackend.LOCAL
    assert settings.bus.backend is BusBackend.MEMORY
    assert settings.tasks.eager is True
    assert settings.database.url.startswith("sqlite")


def test_nested_values_come_from_prefixed_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STAINLESS_BUS__BACKEND", "kafka")
    monkeypatch.setenv("STAINLESS_BUS__MAX_ATTEMPTS", "5")
    monkeypatch.setenv("STAINLESS_STORE__SECRET_KEY", "s3cr3t")
    settings = load_settings()
    assert settings.bus.backend is BusBackend.KAFKA
    assert settings.bus.max_attempts == 5
    assert settings.store.secret_key.get_secret_value() == "s3cr3t"
    assert "s3cr3t" not in repr(settings)


def test_malformed_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STAINLESS_BUS__MAX_ATTEMPTS", "three")
    with pytest.raises(SettingsError, match=r"STAINLESS_BUS__MAX_ATTEMPTS.*'three'"):
        load_settings()


def test_unknown_enum_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STAINLESS_STORE__BACKEND", "ftp")
    with pytest.raises(SettingsError, match="STAINLESS_STORE__BACKEND"):
        load_settings()


def test_unknown_variable_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STAINLESS_BUS__MAX_ATTEMTPS", "3")
    with pytest.raises(SettingsError, match=r"unknown setting.*STAINLESS_BUS__MAX_ATTEMTPS"):
        load_settings()


def test_out_of_range_value_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STAINLESS_RELAY__HTTP_PORT", "70000")
    with pytest.raises(SettingsError, match="STAINLESS_RELAY__HTTP_PORT"):
        load_settings()


def test_every_leaf_setting_is_listed_and_documented() -> None:
    fields = list(iter_setting_fields())
    assert len(fields) == len({env for env, _, _ in fields})
    assert all(doc for _, _, doc in fields), [env for env, _, doc in fields if not doc]
    blocks = {env.split("__")[0].removeprefix("STAINLESS_").lower() for env, _, _ in fields}
    assert blocks == set(Settings.model_fields)


def test_the_settings_reference_lists_every_setting() -> None:
    listed = set(re.findall(r"`(STAINLESS_[A-Z0-9_]+)`", SETTINGS_DOC.read_text()))
    expected = {env for env, _, _ in iter_setting_fields()}
    assert expected <= listed, sorted(expected - listed)
    assert listed - expected == set(), sorted(listed - expected)


def test_oidc_is_off_by_default_and_needs_a_client_with_an_issuer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert load_settings().results.oidc_issuer is None
    monkeypatch.setenv("STAINLESS_RESULTS__OIDC_ISSUER", "https://idp.example/realms/lab")
    with pytest.raises(SettingsError, match=r"STAINLESS_RESULTS.*oidc_client_id is required"):
        load_settings()
    monkeypatch.setenv("STAINLESS_RESULTS__OIDC_CLIENT_ID", "stainless-review")
    monkeypatch.setenv("STAINLESS_RESULTS__OIDC_ROLES_CLAIM", "realm_access.roles")
    results = load_settings().results
    assert (results.oidc_client_id, results.oidc_audience) == ("stainless-review", None)
    assert (results.oidc_roles_claim, results.oidc_role_prefix) == (
        "realm_access.roles",
        "stainless-",
    )


@pytest.mark.parametrize(
    ("issuer", "scopes", "refusal"),
    [
        ("https://idp.example/realms/lab", "openid profile", None),
        ("http://127.0.0.1:8080/realms/lab", "openid", None),
        ("http://localhost:8080", "email openid", None),
        ("http://[::1]:8080", "openid", None),
        ("http://idp.example/realms/lab", "openid", "must be an https URL"),
        ("http://127.0.0.1.example", "openid", "must be an https URL"),
        ("ftp://idp.example", "openid", "must be an https URL"),
        ("idp.example", "openid", "without query or fragment"),
        ("https://idp.example/?tenant=1", "openid", "without query or fragment"),
        ("https://idp.example/realms/lab", "profile email", "must include openid"),
        ("https://idp.example/realms/lab", "openidx", "must include openid"),
    ],
)
def test_the_issuer_is_https_but_on_loopback_and_openid_is_asked_for(
    issuer: str, scopes: str, refusal: str | None
) -> None:
    def build() -> ResultsSettings:
        return ResultsSettings(oidc_issuer=issuer, oidc_client_id="review", oidc_scopes=scopes)

    if refusal is None:
        assert build().oidc_issuer == issuer
    else:
        with pytest.raises(ValidationError, match=refusal):
            build()


def test_clinical_rules_come_from_settings_and_bad_ones_name_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rules = load_settings().clinical.rules()
    assert rules.count == 100 and rules.pathological == ("SMU", "RLY", "IG", "BL", "ALC", "ERB")
    assert {rule.code for rule in rules.proportions} == {"NE", "LY", "MO", "EO", "BA"}
    monkeypatch.setenv("STAINLESS_CLINICAL__PROPORTION_RULES", '[{"code": "LY", "high": 50}]')
    monkeypatch.setenv("STAINLESS_CLINICAL__DIFFERENTIAL_COUNT", "200")
    rules = load_settings().clinical.rules()
    assert [(r.code, r.low, r.high) for r in rules.proportions] == [("LY", None, 50.0)]
    assert rules.count == 200
    monkeypatch.setenv("STAINLESS_CLINICAL__PROPORTION_RULES", '[{"code": "XX", "high": 5}]')
    with pytest.raises(SettingsError, match=r"STAINLESS_CLINICAL.*unknown cell class 'XX'"):
        load_settings()
