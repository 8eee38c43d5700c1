"""Kafka clients' TLS/SASL options and topic settings come from the bus settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from stainless.core.config import BusSettings, KafkaSecurity, SaslMechanism
from stainless.core.events.kafka import connection_options, topic_configs


def test_plaintext_by_default() -> None:
    assert connection_options(BusSettings()) == {"security_protocol": "PLAINTEXT"}
    assert topic_configs(BusSettings()) == {}


def test_sasl_over_tls_passes_the_service_credentials() -> None:
    settings = BusSettings(
        security_protocol=KafkaSecurity.SASL_SSL,
        sasl_mechanism=SaslMechanism.SCRAM_SHA_256,
        sasl_username="relay",
        sasl_password=SecretStr("s3cret"),
        ssl_cafile=Path("/etc/kafka/ca.pem"),
        replication_factor=3,
        min_insync_replicas=2,
    )
    assert connection_options(settings) == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_plain_username": "relay",
        "sasl_plain_password": "s3cret",
        "ssl_cafile": "/etc/kafka/ca.pem",
    }
    assert topic_configs(settings) == {"min.insync.replicas": "2"}


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ({"security_protocol": "SASL_SSL"}, "needs sasl_username and sasl_password"),
        ({"replication_factor": 1, "min_insync_replicas": 2}, "cannot exceed"),
    ],
)
def test_inconsistent_settings_are_refused(values: dict[str, object], reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        BusSettings.model_validate(values)
