"""The fleet view's Kafka settings: the gateway's security section, secrets resolved, ours kept."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import pytest

from common.httpaccess import FLEET_HINT, Access
from fleet.config import consumer_settings, from_values, load_config
from fleet.consumer import Stats
from fleet.errors import FleetError
from fleet.web import FleetWeb, web_access
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


def test_a_view_open_to_the_network_needs_a_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "fleet.yaml"
    config.write_text("kafka: {bootstrap: k1:9093}\nlisten: 0.0.0.0:8300\n")
    with pytest.raises(ConfigError, match="not a loopback address: the fleet view would be open"):
        load_config(config)
    config.write_text(config.read_text() + "token: {env: FLEET_TOKEN}\n")
    monkeypatch.setenv("FLEET_TOKEN", "t" * 24)
    access = web_access(load_config(config))
    refused = access.check("/api/gateways", "", {})
    assert refused is not None
    assert (refused.status, b"fleet view" in refused.body) == (401, True)
    assert access.check("/api/gateways", "", {"authorization": "Bearer " + "t" * 24}) is None
    assert access.check("/healthz", "", {}) is None
    monkeypatch.setenv("FLEET_TOKEN", "short")
    with pytest.raises(FleetError, match="token: the token has 5 characters"):
        web_access(load_config(config))


def test_the_view_s_server_answers_401_without_the_token() -> None:
    token = "t" * 24
    web = FleetWeb("127.0.0.1", 0, lambda: pytest.fail("no store read without the token"), Stats(),
                   access=Access(token, hint=FLEET_HINT)).start()  # fmt: skip
    try:
        for path in ("/", "/api/gateways", "/metrics"):
            with pytest.raises(urllib.error.HTTPError) as info:
                urllib.request.urlopen(f"{web.url.rstrip('/')}{path}", timeout=5)
            assert (info.value.code, b"fleet view asks for its token" in info.value.read()) == (401, True)
        request = urllib.request.Request(web.url, headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=5) as resp:
            assert (resp.status, b"edgegw fleet" in resp.read()) == (200, True)
    finally:
        web.stop()
