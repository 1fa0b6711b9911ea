"""Discovery, the pure part: announcements in, config data out (no broker)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from devices.config import DeviceConfig
from devices.discovery import Announcements, Discovered, make_id
from devices.profiles import build_decoder
from gateway.config import review_config
from gateway.discovered import merge_config, render_config
from simulators.announcements import tasmota_announcements, zigbee2mqtt_announcements


def _z2m(*devices: dict[str, Any], base: str = "zigbee2mqtt") -> Discovered:
    found = Announcements()
    assert found.add(f"{base}/bridge/devices", json.dumps(list(devices)).encode())
    return found.result()


def _device(name: str, *exposes: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"friendly_name": name, "ieee_address": "0x00158d0001a2b3c4", "type": "EndDevice",
            "definition": {"vendor": "V", "model": "M", "exposes": list(exposes)}, **extra}  # fmt: skip


def _all() -> Discovered:
    found = Announcements()
    for topic, payload in zigbee2mqtt_announcements() + tasmota_announcements():
        assert found.add(topic, payload)
    return found.result()


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Living Room", "living-room"),
        ("Kitchen/Coffee Plug", "kitchen-coffee-plug"),
        ("Küche Thermostat", "kuche-thermostat"),
        ("0x00158d0001a2b3c4", "0x00158d0001a2b3c4"),
        ("  plug_1 ", "plug_1"),
        ("温度", "device"),
    ],
)
def test_ids_from_names(name: str, expected: str) -> None:
    assert make_id(name) == expected


NUM = {"type": "numeric", "access": 1}
FEATURES: list[tuple[dict[str, Any], dict[str, Any] | None]] = [
    ({**NUM, "property": "temperature", "unit": "°C"},
     {"metric": "temperature", "type": "number", "unit": "°C"}),
    ({**NUM, "property": "humidity"}, {"metric": "humidity", "type": "number", "unit": "%"}),  # unit guessed
    ({**NUM, "property": "brightness", "access": 7}, {"metric": "brightness", "type": "number"}),
    ({"type": "binary", "property": "contact", "access": 1, "value_on": False, "value_off": True},
     {"metric": "contact", "type": "bool"}),
    ({"type": "binary", "property": "state", "access": 7, "value_on": "ON", "value_off": "OFF"},
     {"metric": "state", "type": "string"}),
    ({"type": "enum", "property": "action", "access": 1, "values": ["single"]},
     {"metric": "action", "type": "string"}),
    ({"type": "text", "property": "status", "access": 1}, {"metric": "status", "type": "string"}),
    ({**NUM, "property": "occupancy_timeout", "access": 3, "category": "config"}, None),  # a setting
    ({"type": "enum", "property": "effect", "access": 2, "values": ["blink"]}, None),  # write-only
    ({"type": "composite", "property": "color", "access": 7, "features": [{**NUM, "property": "x"}]}, None),
]  # fmt: skip


@pytest.mark.parametrize(("feature", "field"), FEATURES, ids=[str(f[0]["property"]) for f in FEATURES])
def test_each_published_feature_becomes_a_typed_metric(
    feature: dict[str, Any], field: dict[str, Any] | None
) -> None:
    found = _z2m(_device("Probe", feature, {**NUM, "property": "linkquality", "unit": "lqi"}))
    fields = found.devices[0].data["fields"]
    assert fields.get(feature["property"]) == field
    if feature["property"] == "humidity":
        assert "units guessed (not announced): humidity %" in found.devices[0].comments
    if feature["type"] == "composite":
        assert "left out: color (composite: a nested value, not one reading)" in found.devices[0].comments


# friendly name -> (actuator id, read-back), from simulators/announcements.py
ACTUATORS = {
    "Kitchen/Coffee Plug": ("kitchen-coffee-plug/switch", True),
    "Desk Bulb": ("desk-bulb/light", True),
    "Bedroom Thermostat": ("bedroom-thermostat/thermostat", True),
    "Living Room Blind": ("living-room-blind/cover", True),
    "Washing Machine": ("washing-machine/relay", True),
}
DEVICES: dict[str, tuple[str, dict[str, str | None]]] = {
    "living-room-climate": ("zigbee2mqtt/Living Room Climate",
                            {"temperature": "°C", "humidity": "%", "pressure": "hPa"}),
    "front-door": ("zigbee2mqtt/Front Door", {"contact": None}),
    "hall-motion": ("zigbee2mqtt/Hall Motion", {"occupancy": None, "illuminance_lux": "lx"}),
    "kitchen-coffee-plug": ("zigbee2mqtt/Kitchen/Coffee Plug",
                            {"state": None, "power": "W", "energy": "kWh"}),
    "desk-bulb": ("zigbee2mqtt/Desk Bulb", {"state": None, "brightness": None, "color_temp": "mired"}),
    "bedroom-thermostat": ("zigbee2mqtt/Bedroom Thermostat",
                           {"local_temperature": "°C", "occupied_heating_setpoint": "°C",
                            "running_state": None}),
    "living-room-blind": ("zigbee2mqtt/Living Room Blind", {"position": "%", "state": None}),
    "bedside-button": ("zigbee2mqtt/Bedside Button", {"action": None, "battery": "%"}),
    "washing-machine": ("tele/tasmota_B0C1D2/SENSOR", {"energy_power": "W", "energy_total": "kWh"}),
    "garage-sensor": ("tele/tasmota_B0C1D3/SENSOR", {"am2301_temperature": "°C", "am2301_humidity": "%"}),
}  # fmt: skip


@pytest.mark.parametrize("dev_id", DEVICES)
def test_one_device_per_sensor_with_its_metrics_and_units(dev_id: str) -> None:
    topic, metrics = DEVICES[dev_id]
    device = {e.data["id"]: e.data for e in _all().devices}[dev_id]
    assert device["topic"] == topic
    by_metric = {spec["metric"]: spec for spec in device["fields"].values()}
    for metric, unit in metrics.items():
        assert by_metric[metric].get("unit") == unit, metric


def test_one_actuator_per_thing_that_can_be_switched_or_set() -> None:
    found = _all()
    got = {e.data["id"]: "confirm" in e.data for e in found.actuators}
    assert got == dict(ACTUATORS.values())
    bulb = next(e for e in found.actuators if e.data["id"] == "desk-bulb/light")
    assert bulb.data == {"id": "desk-bulb/light", "profile": "zigbee2mqtt", "name": "Desk Bulb",
                         "confirm": {"timeout": "5s"}}  # fmt: skip
    assert "set state: ON/OFF/TOGGLE; brightness: 0..254; color_temp: 250..454 mired; color" in bulb.comments
    relay = next(e for e in found.actuators if e.data["id"] == "washing-machine/relay")
    assert relay.data["name"] == "tasmota_B0C1D2"


@pytest.mark.parametrize(
    ("device", "note"),
    [
        (_device("Off", {**NUM, "property": "temperature"}, disabled=True),
         "Zigbee2MQTT 'Off': disabled, skipped"),
        ({**_device("New"), "definition": None}, "Zigbee2MQTT 'New': no definition"),
        (_device("a/+/b", {**NUM, "property": "temperature"}), "Zigbee2MQTT 'a/+/b': the name cannot be"),
        (_device("trailing ", {**NUM, "property": "temperature"}),
         "Zigbee2MQTT 'trailing ': the name cannot be"),
    ],
)
def test_devices_that_cannot_be_configured_are_noted(device: dict[str, Any], note: str) -> None:
    found = _z2m(device, {"friendly_name": "Coordinator", "type": "Coordinator", "definition": None})
    assert not found.devices
    assert not found.actuators
    assert len(found.notes) == 1
    assert found.notes[0].startswith(note)


def test_an_endpoint_and_a_base_topic_show_in_the_actuator() -> None:
    state = {"type": "binary", "property": "state_l2", "access": 7, "value_on": "ON", "value_off": "OFF"}
    found = _z2m(_device("Double", {"type": "switch", "endpoint": "l2", "features": [state]}), base="z2m")
    assert found.actuators[0].data == {"id": "double/switch-l2", "profile": "zigbee2mqtt", "name": "Double",
                                       "base_topic": "z2m", "confirm": {"timeout": "5s"}}  # fmt: skip
    assert found.devices[0].data["topic"] == "z2m/Double"


def test_the_same_name_twice_gets_two_ids() -> None:
    temp = {**NUM, "property": "temperature"}
    found = _z2m(_device("Sensor", temp), _device("sensor", temp))
    assert [e.data["id"] for e in found.devices] == ["sensor", "sensor-2"]


def _tasmota(config: dict[str, Any], sensors: dict[str, Any] | None = None) -> Discovered:
    found = Announcements()
    base = {"dn": "Tas", "t": "tas", "ft": "%prefix%/%topic%/", "tp": ["cmnd", "stat", "tele"], "mac": "AABB"}
    found.add("tasmota/discovery/AABB/config", json.dumps({**base, **config}).encode())
    if sensors is not None:
        found.add("tasmota/discovery/AABB/sensors", json.dumps({"sn": sensors}).encode())
    return found.result()


@pytest.mark.parametrize(
    ("config", "actuators"),
    [
        ({"rl": [1, 0, 0]}, [("tas/relay", "tas")]),
        ({"rl": [1, 1, 0]}, [("tas/relay1", "tas"), ("tas/relay2", "tas")]),
        ({"rl": [2, 0]}, [("tas/light", "tas")]),
        ({"rl": [3, 0]}, [("tas/shutter1", "tas")]),
        ({"rl": [0, 0]}, []),
        ({"rl": [1], "ft": "%topic%/%prefix%/"}, []),  # commands not on cmnd/<topic>: noted
    ],
)
def test_tasmota_relays_lights_and_shutters(config: dict[str, Any], actuators: list[tuple[str, str]]) -> None:
    found = _tasmota(config)
    assert [(e.data["id"], e.data["name"]) for e in found.actuators] == actuators
    if "ft" in config:
        assert "no actuator written" in found.notes[0]


def test_tasmota_sensor_sample_becomes_fields_with_the_decoder_s_names() -> None:
    sample = {"Time": "x", "DS18B20": {"Id": "01", "Temperature": 70.1}, "TempUnit": "F", "Illuminance": 30,
              "Switch1": "ON", "ENERGY": {"Total": [1.0, 2.0]}}  # fmt: skip
    found = _tasmota({"rl": []}, sample)
    assert found.devices[0].data["fields"] == {
        "DS18B20.Id": {"metric": "ds18b20_id", "type": "string"},
        "DS18B20.Temperature": {"metric": "ds18b20_temperature", "type": "number", "unit": "°F"},
        "Illuminance": {"metric": "illuminance", "type": "number", "unit": "lx"},
        "Switch1": {"metric": "switch1", "type": "string"},
    }
    assert "left out: ENERGY.Total (list)" in found.devices[0].comments


@pytest.mark.parametrize(
    ("dev_id", "topic", "payload", "expected"),
    [
        ("living-room-climate", "zigbee2mqtt/Living Room Climate",
         {"temperature": 21.5, "humidity": 40, "linkquality": 80, "voltage": 3000},
         {("temperature", 21.5, "°C"), ("humidity", 40.0, "%"), ("linkquality", 80.0, "lqi")}),
        ("front-door", "zigbee2mqtt/Front Door", {"contact": False, "battery": 90},
         {("contact", False, None), ("battery", 90.0, "%")}),
        ("washing-machine", "tele/tasmota_B0C1D2/SENSOR",
         {"Time": "t", "ENERGY": {"Power": 1800, "Total": 12.6, "TotalStartTime": "t"}},
         {("energy_power", 1800.0, "W"), ("energy_total", 12.6, "kWh")}),
    ],
)  # fmt: skip
def test_the_generated_devices_decode_what_the_devices_send(
    dev_id: str, topic: str, payload: dict[str, Any], expected: set[tuple[str, object, str | None]]
) -> None:
    data = next(e.data for e in _all().devices if e.data["id"] == dev_id)
    decoder = build_decoder(DeviceConfig.model_validate(data))
    readings = decoder.decode(topic, json.dumps(payload).encode(), 0.0)
    assert {(r.metric, r.value, r.unit) for r in readings} == expected


def test_the_rendered_config_passes_check_and_says_where_it_guessed(tmp_path: Path) -> None:
    found = _all()
    found.notes.append("Zigbee2MQTT 'Old': disabled, skipped")
    path = tmp_path / "home.yaml"
    path.write_text(render_config(found, host="broker.local", port=1883), encoding="utf-8")
    review = review_config(path)
    assert review.issues == []
    assert review.loaded is not None
    config = review.loaded.config
    assert (config.mqtt.host, config.mqtt.port) == ("broker.local", 1883)
    assert len(config.devices) == 10
    assert len(config.actuators) == 5
    text = path.read_text(encoding="utf-8")
    assert "# - Zigbee2MQTT 'Old': disabled, skipped" in text
    assert "  # id made from the friendly name 'Kitchen/Coffee Plug'" in text
    assert "  # set occupied_heating_setpoint: 5..35 °C; system_mode: heat" in text


EXISTING = """\
# my home
mqtt: {host: 10.0.0.2}
devices:
  - id: climate          # renamed by hand
    topic: zigbee2mqtt/Living Room Climate
    profile: zigbee2mqtt
  - id: desk-bulb        # another device took this id
    topic: zigbee2mqtt/Old Bulb
actuators:
  - {id: coffee, profile: zigbee2mqtt, name: Kitchen/Coffee Plug}
rules:
  - id: r1
    when: {sensor: climate/temperature, above: 25}
    then: [{set: coffee, to: {state: "OFF"}}]
"""


def test_merge_adds_what_is_new_and_leaves_the_rest(tmp_path: Path) -> None:
    merged = merge_config(EXISTING, _all())
    assert merged.text.startswith(EXISTING.split("actuators:", 1)[0])
    assert "  - {id: coffee, profile: zigbee2mqtt, name: Kitchen/Coffee Plug}\n" in merged.text
    assert set(merged.kept) == {"living-room-climate", "kitchen-coffee-plug/switch"}
    assert "desk-bulb-2" in merged.added
    assert "desk-bulb-2/light" in merged.added
    assert len(merged.added) == 9 + 4
    path = tmp_path / "home.yaml"
    path.write_text(merged.text, encoding="utf-8")
    review = review_config(path)
    assert review.issues == []
    again = merge_config(merged.text, _all())
    assert again.added == []
    assert again.text == merged.text
