"""The bridge config section and what it becomes for librdkafka."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from bridge.config import (
    BridgeConfig,
    KafkaConfig,
    KafkaSecrets,
    KafkaSecurity,
    SaslConfig,
    SecretRef,
    SpoolConfig,
    TlsConfig,
    parse_duration,
)
from bridge.kafka import KafkaUplink, client_config
from gateway.errors import UplinkError


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("250ms", 0.25), ("30s", 30.0), ("2m", 120.0), ("1h30m", 5400.0), ("7d", 604800.0), (5, 5.0)],
)
def test_durations(text: Any, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "soon", "-1s", True, [1]])
def test_bad_durations(bad: Any) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


def test_defaults_and_sizes() -> None:
    cfg = BridgeConfig.model_validate(
        {"spool": {"max_bytes": "64MiB", "ttl": "2d"}, "kafka": {"bootstrap": "k:9092"}}
    )
    assert cfg.spool.max_bytes == 64 * 1024 * 1024
    assert cfg.spool.ttl == 172800.0
    assert cfg.spool.synchronous == "full"  # power cuts lose nothing acknowledged by default
    assert cfg.kafka is not None
    assert cfg.kafka.mode == "exactly_once"
    with pytest.raises(ValidationError):
        SpoolConfig.model_validate({"synchronous": "off"})
    with pytest.raises(ValidationError, match="Extra inputs"):
        SpoolConfig.model_validate({"path": "/x", "bogus": 1})


@pytest.mark.parametrize(
    ("security", "message"),
    [
        ({"protocol": "SASL_SSL"}, "needs a sasl"),
        ({"protocol": "SSL", "sasl": {"username": "u", "password": {"env": "P"}}}, "needs protocol SASL_SSL"),
        ({"protocol": "PLAINTEXT", "tls": {}}, "needs protocol SSL"),
        ({"protocol": "SSL", "tls": {"cert_file": "/c.pem"}}, "go together"),
        (
            {"protocol": "SASL_SSL", "sasl": {"username": "u", "password": {"env": "P", "file": "/p"}}},
            "exactly one",
        ),
        (
            {"protocol": "SASL_SSL", "sasl": {"username": "u", "password": "plain-text-password"}},
            "valid dictionary",
        ),
    ],
)
def test_security_is_consistent(security: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        KafkaSecurity.model_validate(security)


def test_producer_overrides_cannot_touch_security_or_transactions() -> None:
    with pytest.raises(ValidationError, match="may not set"):
        KafkaConfig(bootstrap="k:9092", producer_overrides={"sasl.password": "x"})
    with pytest.raises(ValidationError, match="may not set"):
        KafkaConfig(bootstrap="k:9092", producer_overrides={"transactional.id": "x"})


def test_client_config_carries_resolved_secrets_only_to_librdkafka() -> None:
    password = "hunter2-" + "x" * 8
    config = KafkaConfig(
        bootstrap="k:9093",
        security=KafkaSecurity(
            protocol="SASL_SSL",
            sasl=SaslConfig(username="gw", password=SecretRef(credential="kafka-password")),
            tls=TlsConfig(ca_file=Path("/etc/ca.pem"), cert_file=Path("/c.pem"), key_file=Path("/k.pem"),
                          key_password=SecretRef(env="KEY_PASS")),
        ),
    )  # fmt: skip
    secrets = KafkaSecrets(sasl_password=SecretStr(password), ssl_key_password=SecretStr("kp"))
    conf = client_config(config, secrets)
    assert conf["security.protocol"] == "sasl_ssl"
    assert conf["sasl.mechanism"] == "SCRAM-SHA-512"
    assert conf["sasl.password"] == password
    assert conf["ssl.key.password"] == "kp"
    assert conf["ssl.endpoint.identification.algorithm"] == "https"
    assert password not in repr(config) + repr(secrets) + str(secrets)
    with pytest.raises(UplinkError, match="no password"):
        client_config(config, KafkaSecrets())


@pytest.mark.parametrize("mode", ["exactly_once", "at_least_once"])
def test_producer_settings(mode: str) -> None:
    uplink = KafkaUplink(KafkaConfig(bootstrap="k:9092", mode=mode, send_timeout="20s"), "gw-17")
    conf = uplink._producer_config()
    assert conf["compression.type"] == "zstd"
    assert conf["enable.idempotence"] is True
    assert conf["acks"] == "all"
    if mode == "exactly_once":
        assert conf["transactional.id"] == "edgegw-gw-17"
        assert conf["message.timeout.ms"] <= conf["transaction.timeout.ms"]
    else:
        assert "transactional.id" not in conf
