"""The config install.sh writes on a fresh Pi is valid as it stands."""

from __future__ import annotations

from gateway.config import load_config
from tests.systemd.conftest import ROOT


def test_example_config_loads() -> None:
    loaded = load_config(ROOT / "systemd" / "edgegw.example.yaml")
    config = loaded.config
    assert config.gateway.id is None  # derived on the first start, kept in the state directory
    assert config.bridge.kafka is None  # no uplink until the admin adds one
    assert (config.mqtt.host, config.mqtt.port) == ("127.0.0.1", 1883)
    assert config.http.host == "127.0.0.1"
