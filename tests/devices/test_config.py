"""Device-side config models: what is accepted, what is refused."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from ruamel.yaml import YAML

from devices.config import ActuatorConfig, DeviceConfig, MqttConnection, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30.0), ("2m", 120.0), ("1h30m", 5400.0), ("250ms", 0.25), (5, 5.0), ("1h", 3600.0),
     ("7d", 604800.0)],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "5x", "m", True, -1, "1.5.3s"])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


def test_device_defaults_and_shorthands() -> None:
    cfg = DeviceConfig.model_validate(
        {
            "id": "boiler",
            "topic": "home/boiler",
            "fields": {"t": "temperature"},
            "stale_after": "2m",
            "max_payload": "1KiB",
        }
    )
    assert cfg.fields["t"].metric == "temperature"
    assert (cfg.stale_after, cfg.max_payload) == (120.0, 1024)
    assert DeviceConfig(id="x", topic="a/b").max_payload == 64 * 1024


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"id": "a b", "topic": "t"}, "device ids"),
        ({"id": "a"}, "needs a topic"),
        ({"id": "a", "topic": "a/#/b"}, "'#' must be"),
        ({"id": "a", "topic": "a/b+"}, "'\\+' must be"),
        ({"id": "a", "topic": "t", "profile": "kv"}, "serial devices"),
        ({"id": "a", "transport": "serial"}, "serial:"),
        ({"id": "a", "topic": "t", "colour": "red"}, "Extra inputs"),
    ],
)
def test_device_errors(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        DeviceConfig.model_validate(data)


def test_mqtt_connection_never_takes_a_literal_password() -> None:
    with pytest.raises(ValidationError):
        MqttConnection.model_validate({"username": "u", "password": "hunter2"})
    with pytest.raises(ValidationError, match="exactly one"):
        MqttConnection.model_validate({"username": "u", "password": {"env": "A", "file": "/x"}})
    conn = MqttConnection.model_validate({"username": "u", "password": {"env": "MQTT_PW"}, "tls": {}})
    assert conn.effective_port == 8883
    assert MqttConnection().effective_port == 1883


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"id": "lamp", "profile": "zigbee2mqtt"}, "needs name"),
        ({"id": "lamp", "profile": "json"}, "needs topic"),
        ({"id": "lamp", "profile": "json", "topic": "a/+"}, "wildcards"),
        ({"id": "lamp", "profile": "json", "topic": "a", "confirm": {}}, "state_topic"),
        ({"id": "lamp", "transport": "serial", "profile": "line"}, "serial"),
        ({"id": "a/b/c", "profile": "json", "topic": "a"}, "actuator ids"),
    ],
)
def test_actuator_errors(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ActuatorConfig.model_validate(data)


def test_the_examples_in_docs_devices_md_are_valid() -> None:
    text = (Path(__file__).parents[2] / "docs" / "devices.md").read_text()
    blocks = [YAML(typ="safe").load(b) for b in re.findall(r"```yaml\n(.*?)```", text, re.DOTALL)]
    found = {key for block in blocks for key in block}
    assert found == {"mqtt", "devices", "actuators"}
    for block in blocks:
        if "mqtt" in block:
            MqttConnection.model_validate(block["mqtt"])
        for device in block.get("devices", []):
            DeviceConfig.model_validate(device)
        for actuator in block.get("actuators", []):
            ActuatorConfig.model_validate(actuator)
