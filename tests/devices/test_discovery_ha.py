"""Discovery from Home Assistant configs, the pure part (no broker)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from devices.config import ActuatorConfig, DeviceConfig
from devices.discovery import Announcements, Discovered
from devices.discovery_ha import value_field
from devices.profiles import build_decoder
from gateway.config import review_config
from gateway.discovered import merge_config, render_config
from simulators.announcements import (
    homeassistant_announcements,
    tasmota_announcements,
    zigbee2mqtt_announcements,
)


def _ha(*configs: tuple[str, object], others: bool = False, prefix: str = "homeassistant") -> Discovered:
    found = Announcements(homeassistant_prefix=prefix)
    if others:
        for topic, payload in zigbee2mqtt_announcements() + tasmota_announcements():
            assert found.add(topic, payload)
    for where, config in configs:
        payload = config if isinstance(config, bytes) else json.dumps(config).encode()
        assert found.add(f"{prefix}/{where}/config", payload)
    return found.result()


DEV = {"name": "Weather Station", "identifiers": ["ws1"]}


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        (None, (None, False)),
        ("{{ value }}", (None, False)),
        ("{{value|float}}", (None, True)),
        ("{{ value_json.temperature }}", ("temperature", False)),
        ("{{ value_json.sensor.temp | float(0) }}", ("sensor.temp", True)),
        ("{{ value_json['air quality'] | int }}", ("air quality", True)),
        ("{{ value_json.temperature | round(1) }}", None),
        ("{% if value == '1' %}ON{% else %}OFF{% endif %}", None),
        ("{{ value_json.a.b }} {{ value }}", None),
        (42, None),
    ],
)
def test_value_templates_that_map(template: object, expected: tuple[str | None, bool] | None) -> None:
    assert value_field(template) == expected


SENSORS: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("sensor/ws/temperature",
     {"name": "Temperature", "state_topic": "home/ws", "value_template": "{{ value_json.temperature }}",
      "unit_of_measurement": "°C", "device": DEV},
     {"id": "weather-station", "topic": "home/ws", "profile": "json",
      "fields": {"temperature": {"metric": "temperature", "type": "number", "unit": "°C"}}}),
    ("sensor/ws/pressure",  # abbreviated keys and the ~ base topic, as ESPHome writes them
     {"name": "Weather Station Pressure", "~": "home/ws", "stat_t": "~/pressure", "unit_of_meas": "hPa",
      "dev": {"name": "Weather Station", "mf": "ACME"}},
     {"id": "weather-station", "topic": "home/ws/pressure", "profile": "plain",
      "metric": "pressure", "unit": "hPa", "value_type": "number"}),
    ("binary_sensor/door/contact",
     {"name": "Garage Door", "state_topic": "home/garage/door", "payload_on": "open",
      "payload_off": "closed"},
     {"id": "garage-door", "topic": "home/garage/door", "profile": "plain", "metric": "garage_door",
      "value_type": "auto"}),
    ("binary_sensor/ws/rain",
     {"name": "Rain", "state_topic": "home/ws", "value_template": "{{ value_json.rain }}"},
     {"id": "rain", "topic": "home/ws", "profile": "json",
      "fields": {"rain": {"metric": "rain", "type": "any"}}}),
    ("sensor/ws/status",
     {"name": "Status", "state_topic": "home/ws/status", "device": DEV},
     {"id": "weather-station", "topic": "home/ws/status", "profile": "plain", "metric": "status",
      "value_type": "auto"}),
]  # fmt: skip


@pytest.mark.parametrize(("where", "config", "device"), SENSORS, ids=[s[0] for s in SENSORS])
def test_each_sensor_config_becomes_a_device(
    where: str, config: dict[str, Any], device: dict[str, Any]
) -> None:
    found = _ha((where, config))
    assert [e.data for e in found.devices] == [device]
    assert found.actuators == []
    assert found.notes == []
    assert f"homeassistant/{where}/config" in found.devices[0].comments[0]
    build_decoder(DeviceConfig.model_validate(device))


def test_configs_on_one_json_topic_make_one_device_and_decode() -> None:
    humidity = {"name": "Humidity", "state_topic": "home/ws", "unit_of_measurement": "%",
                "value_template": "{{ value_json.humidity | float }}", "device": DEV}  # fmt: skip
    found = _ha(*[(w, c) for w, c, _ in SENSORS[:2]], ("sensor/ws/humidity", humidity))
    assert [e.data["id"] for e in found.devices] == ["weather-station", "weather-station-pressure"]
    first = DeviceConfig.model_validate(found.devices[0].data)
    readings = build_decoder(first).decode("home/ws", b'{"temperature": 21.5, "humidity": 40}', 0.0)
    expected = {("temperature", 21.5, "°C"), ("humidity", 40, "%")}
    assert {(r.metric, r.value, r.unit) for r in readings} == expected


ACTUATORS: list[tuple[str, dict[str, Any], dict[str, Any], str]] = [
    ("switch/pump/relay",
     {"name": "Relay", "command_topic": "home/pump/set", "state_topic": "home/pump/state",
      "device": {"name": "Pump"}},
     {"id": "pump/switch", "profile": "plain", "topic": "home/pump/set",
      "confirm": {"timeout": "5s", "state_topic": "home/pump/state"}},
     "sent as the plain payloads 'ON'/'OFF'"),
    ("switch/fan/power",
     {"name": "Fan", "cmd_t": "home/fan/cmd", "stat_t": "home/fan", "val_tpl": "{{ value_json.state }}"},
     {"id": "fan/switch", "profile": "plain", "topic": "home/fan/cmd"},
     "no read-back: the state on home/fan needs the template '{{ value_json.state }}'"),
    ("switch/valve/relay",
     {"name": "Valve", "command_topic": "home/valve/set", "state_topic": "home/valve",
      "payload_on": "open", "pl_off": "close", "state_on": "opened", "state_off": "closed"},
     {"id": "valve/switch", "profile": "plain", "topic": "home/valve/set",
      "payload_on": "open", "payload_off": "close"},
     "no read-back: the state on home/valve reads 'opened'/'closed', not what is sent"),
    ("switch/heater/relay",
     {"name": "Heater", "command_topic": "home/heater/set", "state_topic": "home/heater",
      "payload_on": "1", "payload_off": "0", "value_template": "{{ value }}"},
     {"id": "heater/switch", "profile": "plain", "topic": "home/heater/set", "payload_on": "1",
      "payload_off": "0", "confirm": {"timeout": "5s", "state_topic": "home/heater"}},
     "sent as the plain payloads '1'/'0'"),
    ("light/lamp/light",
     {"name": "Lamp", "schema": "json", "command_topic": "home/lamp/set", "state_topic": "home/lamp",
      "brightness": True},
     {"id": "lamp/light", "profile": "json", "topic": "home/lamp/set",
      "confirm": {"timeout": "5s", "state_topic": "home/lamp"}},
     "set {state: ON/OFF, brightness: 0..255}"),
    ("light/strip/light",
     {"name": "Strip", "command_topic": "home/strip/set"},
     {"id": "strip/light", "profile": "plain", "topic": "home/strip/set"}, "no read-back: no state topic"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("where", "config", "actuator", "comment"), ACTUATORS, ids=[a[0] for a in ACTUATORS]
)
def test_each_switch_or_light_becomes_an_actuator(
    where: str, config: dict[str, Any], actuator: dict[str, Any], comment: str
) -> None:
    found = _ha((where, config))
    assert [e.data for e in found.actuators] == [actuator]
    assert found.devices == []
    assert any(comment in c for c in found.actuators[0].comments), found.actuators[0].comments
    ActuatorConfig.model_validate(actuator)


NOTES: list[tuple[str, object, str]] = [
    ("sensor/x/t", {"name": "T", "state_topic": "a/t", "value_template": "{{ value | round(1) }}"},
     "homeassistant/sensor/x/t/config: value_template '{{ value | round(1) }}' cannot be mapped"),
    ("switch/x/s", {"name": "S", "command_topic": "a/s", "command_template": '{"on": {{ value }}}'},
     "homeassistant/switch/x/s/config: command_template"),
    ("sensor/x/t", {"name": "T", "state_topic": "e/t", "origin": {"name": "edgegw"}}, "by edgegw itself"),
    ("sensor/x/t", {"name": "T", "state_topic": "edgegw/t", "dev": {"mf": "edgegw"}}, "by edgegw itself"),
    ("cover/x/c", {"name": "C", "command_topic": "a/c"}, "Home Assistant 'cover' configs are not read"),
    ("sensor/x/t", {"name": "T"}, "no state topic"),
    ("switch/x/s", {"name": "S", "state_topic": "a/s"}, "no command topic"),
    ("sensor/x/t", {"name": "T", "state_topic": "a/+/t"}, "has a wildcard"),
    ("sensor/x/t", b"{not json", "not a JSON object"),
]  # fmt: skip


@pytest.mark.parametrize(("where", "config", "note"), NOTES)
def test_what_cannot_be_mapped_is_noted(where: str, config: object, note: str) -> None:
    found = _ha((where, config))
    assert found.devices == found.actuators == []
    assert len(found.notes) == 1
    assert note in found.notes[0]


def test_an_empty_config_deletes_and_is_not_noted() -> None:
    found = _ha(("sensor/x/t", b""))
    assert found.devices == found.actuators == []
    assert found.notes == []


COVERED = [  # the configs Zigbee2MQTT and Tasmota publish for the devices they announce
    ("sensor/0x00158d0000000001/temperature/config",
     {"name": "Temperature", "state_topic": "zigbee2mqtt/Living Room Climate",
      "value_template": "{{ value_json.temperature }}", "unit_of_measurement": "°C"}),
    ("switch/0x00158d0000000004/switch/config",
     {"name": None, "command_topic": "zigbee2mqtt/Kitchen/Coffee Plug/set",
      "state_topic": "zigbee2mqtt/Kitchen/Coffee Plug", "value_template": "{{ value_json.state }}"}),
    ("sensor/zigbee2mqtt_bridge/version", {"name": "Version", "state_topic": "zigbee2mqtt/bridge/info"}),
    ("switch/A4CF12B0C1D2_RL_1",
     {"name": "Washing Machine", "command_topic": "cmnd/tasmota_B0C1D2/POWER",
      "state_topic": "tele/tasmota_B0C1D2/STATE", "value_template": "{{ value_json.POWER }}"}),
    ("sensor/A4CF12B0C1D3_AM2301_Temperature",
     {"name": "Temperature", "state_topic": "tele/tasmota_B0C1D3/SENSOR",
      "value_template": "{{ value_json['AM2301'].Temperature }}"}),
]  # fmt: skip


def test_configs_of_zigbee2mqtt_and_tasmota_devices_are_left_to_their_own_announcements() -> None:
    alone = _ha(*[(w.removesuffix("/config"), c) for w, c in COVERED])
    assert len(alone.devices) + len(alone.actuators) == len(COVERED)
    both = _ha(*[(w.removesuffix("/config"), c) for w, c in COVERED], others=True)
    plain = _ha(others=True)
    assert [e.data for e in both.devices] == [e.data for e in plain.devices]
    assert [e.data for e in both.actuators] == [e.data for e in plain.actuators]
    assert both.notes == [f"{len(COVERED)} Home Assistant configs of the Zigbee2MQTT and Tasmota devices "
                          "above: already read from their own announcements"]  # fmt: skip


def test_a_prefix_and_topics_that_are_not_configs() -> None:
    found = Announcements(homeassistant_prefix="ha/")
    assert not found.add("homeassistant/sensor/x/t/config", b"{}")
    assert not found.add("ha/sensor/config", b"{}")
    assert not found.add("ha/sensor/a/b/c/config", b"{}")
    assert not found.add("ha/sensor/x/t/state", b"{}")
    assert found.add("ha/sensor/x/t/config", b'{"state_topic": "a/t"}')
    assert found.add("ha/sensor/n/t/config", b'{"state_topic": "a/u"}')
    assert found.counts() == (0, 0, 2)
    assert {e.data["topic"] for e in found.result().devices} == {"a/t", "a/u"}


def test_the_rendered_and_merged_config_passes_check(tmp_path: Path) -> None:
    found = Announcements()
    announced = zigbee2mqtt_announcements() + tasmota_announcements() + homeassistant_announcements()
    for topic, payload in announced:
        assert found.add(topic, payload)
    result = found.result()
    assert result.notes == []
    path = tmp_path / "home.yaml"
    path.write_text(render_config(result, host="broker.local", port=1883), encoding="utf-8")
    review = review_config(path)
    assert review.issues == []
    assert review.loaded is not None
    config = review.loaded.config
    assert "weather-station" in {d.id for d in config.devices}
    assert "pump-relay/switch" in {a.id for a in config.actuators}
    text = path.read_text(encoding="utf-8")
    assert "# Home Assistant 'Weather Station', ACME WS-1: homeassistant/sensor/weather_station/" in text
    again = merge_config(text, found.result())
    assert again.added == []
    only_others = Announcements()
    for topic, payload in zigbee2mqtt_announcements() + tasmota_announcements():
        only_others.add(topic, payload)
    partial = render_config(only_others.result(), host="broker.local", port=1883)
    merged = merge_config(partial, found.result())
    assert merged.added == ["weather-station", "pump-relay/switch"]
