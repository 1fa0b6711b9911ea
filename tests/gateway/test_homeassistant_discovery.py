"""Home Assistant discovery payloads and command translation (pure: no broker)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest

from gateway.config import GatewayConfig
from gateway.errors import CommandRefusedError
from gateway.homeassistant.commands import actuator_state, translate
from gateway.homeassistant.discovery import RuleInfo, Topics, plan, safe_id
from tests.gateway.conftest import ROOT

SCHEMA = json.loads((ROOT / "schemas" / "homeassistant" / "device-discovery.schema.json").read_text())
TOPICS = Topics("edgegw/hall", "homeassistant", "homeassistant/status")
RULES = [
    RuleInfo("lamp-on", emits=True, sensors=("hall_sensor/lux",),
             on_sets=(("lamp/main", {"state": "on", "brightness": 120}),),
             off_sets=(("lamp/main", {"state": "off"}),)),
    RuleInfo("heat", on_sets=(("living/heater", {"mode": "heat", "target": 21}),),
             off_sets=(("living/heater", {"mode": "idle"}),)),
]  # fmt: skip


def config(**ha: Any) -> GatewayConfig:
    return GatewayConfig.model_validate({
        "devices": [
            {"id": "hall_sensor", "topic": "sensors/hall", "profile": "json",
             "fields": {"lux": {"metric": "lux", "unit": "lx"}, "t": {"metric": "temperature", "unit": "°C"},
                        "open": {"metric": "window", "type": "bool"}}},
            {"id": "kitchen", "topic": "zigbee2mqtt/kitchen", "profile": "zigbee2mqtt"},
        ],
        "actuators": [
            {"id": "lamp/main", "profile": "json", "topic": "lamp/set"},
            {"id": "living/heater", "profile": "json", "topic": "heater/set"},
            {"id": "kitchen/plug", "profile": "zigbee2mqtt", "name": "kitchen-plug"},
        ],
        "homeassistant": {"enabled": True, **ha},
    })  # fmt: skip


def test_every_payload_validates_and_ids_are_safe() -> None:
    out = plan(config(), gateway_id="hall.pi", version="1.0", topics=TOPICS, rules=RULES, seen={})
    assert out.configs
    for topic, payload in out.configs.items():
        jsonschema.validate(payload, SCHEMA)
        node = topic.split("/")[2]
        assert node == safe_id(node)
        assert node.startswith("edgegw_hall_pi")
    # Zigbee2MQTT's device and actuator are its own to announce
    assert not any("kitchen" in topic for topic in out.configs)
    with_z2m = plan(config(include_zigbee2mqtt=True), gateway_id="hall.pi", version="1.0", topics=TOPICS,
                    rules=RULES, seen={"kitchen": {"temperature": 20.5}})  # fmt: skip
    kitchen = with_z2m.configs["homeassistant/device/edgegw_hall_pi_kitchen/config"]["components"]
    assert kitchen["temperature"]["unit_of_measurement"] == "°C"
    assert "kitchen_plug" in kitchen


def test_sensors_units_and_classes() -> None:
    out = plan(
        config(),
        gateway_id="gw",
        version="1.0",
        topics=TOPICS,
        rules=RULES,
        seen={"hall_sensor": {"rssi": -60}},
    )
    hall = out.configs["homeassistant/device/edgegw_gw_hall_sensor/config"]["components"]
    assert set(hall) == {"lux", "temperature", "window", "rssi"}
    assert hall["lux"]["device_class"] == "illuminance"
    assert (hall["temperature"]["device_class"], hall["temperature"]["state_class"]) == (
        "temperature",
        "measurement",
    )
    assert hall["window"]["platform"] == "binary_sensor"
    assert hall["window"]["device_class"] == "window"
    assert "device_class" not in hall["rssi"]  # no unit known: no class guessed
    assert out.devices["hall_sensor"] == ("lux", "rssi", "temperature", "window")


def test_platforms_follow_what_the_rules_set() -> None:
    out = plan(config(), gateway_id="gw", version="1.0", topics=TOPICS, rules=RULES, seen={})
    lamp = out.configs["homeassistant/device/edgegw_gw_lamp/config"]["components"]["lamp_main"]
    assert (lamp["platform"], lamp["schema"], lamp["brightness"]) == ("light", "json", True)
    heater = out.configs["homeassistant/device/edgegw_gw_living/config"]["components"]["living_heater"]
    assert heater["platform"] == "climate"
    assert heater["temperature_command_topic"] == "edgegw/hall/actuators/living/heater/set/target"
    assert set(out.commands) == {"edgegw/hall/actuators/lamp/main/set",
                                 "edgegw/hall/actuators/living/heater/set/mode",
                                 "edgegw/hall/actuators/living/heater/set/target"}  # fmt: skip
    alarms = out.configs["homeassistant/device/edgegw_gw/config"]["components"]
    assert list(alarms) == ["rule_lamp-on"]
    settings = {"lamp/main": {"platform": "switch", "name": "Big lamp"}}
    forced = plan(
        config(actuators=settings), gateway_id="gw", version="1.0", topics=TOPICS, rules=RULES, seen={}
    )
    switch = forced.configs["homeassistant/device/edgegw_gw_lamp/config"]["components"]["lamp_main"]
    assert (switch["platform"], switch["name"]) == ("switch", "Big lamp")


@pytest.mark.parametrize(
    ("command_topic", "payload", "expected"),
    [
        ("lamp/main/set", b'{"state": "ON", "brightness": 80}', {"state": "on", "brightness": 80}),
        ("lamp/main/set", b'{"state": "OFF"}', {"state": "off"}),
        ("lamp/main/set", b'{"state": "ON", "color": {"r": 1}}', None),
        ("lamp/main/set", b'{"state": "ON", "brightness": 300}', None),
        ("lamp/main/set", b"ON", None),
        ("living/heater/set/mode", b"auto", {"mode": "heat"}),
        ("living/heater/set/mode", b"off", {"mode": "idle"}),
        ("living/heater/set/mode", b"cool", None),
        ("living/heater/set/target", b"21.5", {"target": 21.5}),
        ("living/heater/set/target", b"99", None),
        ("living/heater/set/target", b"\xff", None),
    ],
)
def test_commands(command_topic: str, payload: bytes, expected: dict[str, Any] | None) -> None:
    cfg = config(actuators={"living/heater": {"state_key": "mode"}})
    out = plan(cfg, gateway_id="gw", version="1.0", topics=TOPICS, rules=RULES, seen={})
    target = out.commands[f"edgegw/hall/actuators/{command_topic}"]
    if expected is None:
        with pytest.raises(CommandRefusedError):
            translate(target, payload)
    else:
        assert translate(target, payload) == expected


def test_switch_and_states() -> None:
    cfg = config(actuators={"lamp/main": {"platform": "switch"}, "living/heater": {"state_key": "mode"}})
    out = plan(cfg, gateway_id="gw", version="1.0", topics=TOPICS, rules=RULES, seen={})
    lamp = out.actuators["lamp/main"]
    assert translate(out.commands["edgegw/hall/actuators/lamp/main/set"], b"ON") == {"state": "on"}
    assert actuator_state(lamp, {"state": "on"}) == {"state": "ON"}
    assert actuator_state(lamp, {"state": "OFF"}) == {"state": "OFF"}
    assert actuator_state(lamp, {}) == {"state": None}
    heater = out.actuators["living/heater"]
    assert actuator_state(heater, {"mode": "heat", "target": 21}) == {"mode": "auto", "target": 21}
    assert actuator_state(heater, {"mode": "idle", "target": 21}) == {"mode": "off", "target": 21}


def test_settings_for_an_undeclared_actuator_are_a_config_error() -> None:
    with pytest.raises(ValueError, match="undeclared actuators: lamp/other"):
        config(actuators={"lamp/other": {"platform": "light"}})


def test_the_gateway_does_not_load_home_assistant_code_unless_enabled() -> None:
    code = (
        "import sys, gateway.config, gateway.runtime, gateway.metrics, gateway.http; "
        "print(sorted(m for m in sys.modules if m.startswith('gateway.homeassistant')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "['gateway.homeassistant', 'gateway.homeassistant.config']"


def test_edgegw_discover_leaves_out_what_edgegw_announced() -> None:
    from devices.discovery import Announcements  # noqa: PLC0415

    out = plan(config(), gateway_id="gw", version="1.0", topics=TOPICS, rules=RULES, seen={})
    found = Announcements()
    for topic, payload in out.configs.items():
        assert found.add(topic, json.dumps(payload).encode())
    result = found.result()
    assert (result.devices, result.actuators) == ([], [])
    assert len([n for n in result.notes if "published by edgegw itself" in n]) == len(out.configs)
