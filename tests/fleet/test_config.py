"""The fleet view's Kafka settings: the gateway's security section, secrets resolved, ours kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleet.config import consumer_settings, from_values, load_config
from gateway.errors import ConfigError


def test_sasl_and_tls_as_the_gateway_configures_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEET_KAFKA_PASSWORD", "s3cret-pw")
    config = tmp_path / "fleet.yaml"
    config.write_text(
        "kafka:\n  bootstrap: k1:9093\n  security:\n    protocol: SASL_SSL\n"
        "    sasl: {username: fleet, password: {env: FLEET_KAFKA_PASSWORD}}\n"
        "    tls: {ca_file: /etc/ca.pem, verify_hostname: false}\n"
    )
    loaded = load_config(config)
    conf = consumer_settings(loaded)
    assert conf["security.protocol"] == "sasl_ssl"
    assert (conf["sasl.mechanism"], conf["sasl.username"], conf["sasl.password"]) == (
        "SCRAM-SHA-512", "fleet", "s3cret-pw",
    )  # fmt: skip
    assert conf["ssl.ca.location"] == "/etc/ca.pem"
    assert conf["ssl.endpoint.identification.algorithm"] == "none"
    assert "s3cret-pw" not in repr(loaded)  # the config holds the reference, never the secret


def test_offsets_and_isolation_are_not_overridable() -> None:
    conf = consumer_settings(from_values(**{"kafka.bootstrap": "k:9"}))
    assert conf["isolation.level"] == "read_committed"
    assert conf["enable.auto.commit"] is False
    with pytest.raises(ConfigError, match="consumer_overrides"):
        from_values(**{"kafka.bootstrap": "k:9", "kafka.consumer_overrides": {"enable.auto.commit": True}})


def test_a_rebuild_uses_a_group_of_its_own_without_static_membership() -> None:
    config = from_values(**{"kafka.bootstrap": "k:9", "kafka.instance_id": "fleet-1"})
    assert consumer_settings(config)["group.instance.id"] == "fleet-1"
    replay = consumer_settings(config, group_id="edgegw-fleet-rebuild-1")
    assert replay["group.id"] == "edgegw-fleet-rebuild-1"
    assert "group.instance.id" not in replay
