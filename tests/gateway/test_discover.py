"""``edgegw discover`` against the real Mosquitto (issue 18).

A simulated Zigbee2MQTT bridge (8 device kinds) and two Tasmota devices leave their
retained announcements on a broker of this test alone (so the usual topics,
``zigbee2mqtt/...``, ``tasmota/discovery/...``, ``cmnd/...``, are this test's); then:

- ``edgegw discover --write`` writes a config that ``edgegw check`` accepts; it never
  overwrites without ``--force``; ``--merge`` into the same file finds nothing new;
- ``edgegw run`` with that config (plus a gateway section and two rules) turns what the
  simulated devices send into readings, and the rules' commands reach the topics the
  devices listen on;
- with the Home Assistant configs of a device that is neither (a sensor, a switch) and one
  that Zigbee2MQTT publishes for its own device, the config still passes check, with the
  sensor and the switch in it and the Zigbee2MQTT one left to its own announcement.
"""

from __future__ import annotations

import json
import textwrap
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.config import review_config
from simulators.announcements import (
    homeassistant_announcements,
    tasmota_announcements,
    zigbee2mqtt_announcements,
)
from simulators.testbed import Mosquitto
from tests.gateway.conftest import Gateway, TopicWatch, publish

pytestmark = pytest.mark.mqtt


def _announce(broker: Mosquitto, extra: list[tuple[str, bytes]] | None = None) -> None:
    """Publish the announcements retained, as the bridge and the devices do."""
    client = broker.client(f"announce-{uuid.uuid4().hex[:8]}")
    client.connect(broker.host, broker.port, keepalive=30)
    client.loop_start()
    try:
        for topic, payload in zigbee2mqtt_announcements() + tasmota_announcements() + (extra or []):
            client.publish(topic, payload, qos=1, retain=True).wait_for_publish(timeout=15)
    finally:
        client.disconnect()
        client.loop_stop()


def _discover(broker: Mosquitto, *args: str) -> int:
    return main(["discover", "--broker", f"{broker.host}:{broker.port}", "--listen", "1s", "--quiet", *args])


def test_discover_writes_a_config_that_passes_check(
    broker: Mosquitto, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _announce(broker)
    path = tmp_path / "home.yaml"
    assert _discover(broker, "--write", str(path)) == 0
    assert "found 10 devices and 5 actuators; wrote" in capsys.readouterr().err
    review = review_config(path)
    assert review.issues == []
    assert review.loaded is not None
    config = review.loaded.config
    assert {d.id for d in config.devices} == {
        "living-room-climate", "front-door", "hall-motion", "kitchen-coffee-plug", "desk-bulb",
        "bedroom-thermostat", "living-room-blind", "bedside-button", "washing-machine", "garage-sensor",
    }  # fmt: skip
    assert {a.id for a in config.actuators} == {
        "kitchen-coffee-plug/switch", "desk-bulb/light", "bedroom-thermostat/thermostat",
        "living-room-blind/cover", "washing-machine/relay",
    }  # fmt: skip
    assert (config.mqtt.host, config.mqtt.port) == (broker.host, broker.port)
    assert main(["check", "--config", str(path)]) == 0
    assert f"{path}: valid" in capsys.readouterr().out

    written = path.read_text(encoding="utf-8")
    assert _discover(broker, "--write", str(path)) == 2
    assert "exists: add --force to overwrite it" in capsys.readouterr().err
    assert path.read_text(encoding="utf-8") == written
    assert _discover(broker, "--write", str(path), "--force") == 0
    assert _discover(broker, "--merge", str(path)) == 0
    assert "added to" in (err := capsys.readouterr().err)
    assert "nothing new" in err
    assert path.read_text(encoding="utf-8") == written


# What Zigbee2MQTT itself publishes for Home Assistant: left to its own announcement
Z2M_HA_CONFIG = ("homeassistant/sensor/0x00158d0000000001/temperature/config", json.dumps({
    "name": "Temperature", "state_topic": "zigbee2mqtt/Living Room Climate",
    "value_template": "{{ value_json.temperature }}", "unit_of_measurement": "°C"}).encode())  # fmt: skip


def test_home_assistant_configs_of_other_devices_pass_check(
    broker: Mosquitto, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _announce(broker, [*homeassistant_announcements(), Z2M_HA_CONFIG])
    path = tmp_path / "home.yaml"
    assert _discover(broker, "--write", str(path)) == 0
    err = capsys.readouterr().err
    assert "found 11 devices and 6 actuators; wrote" in err
    assert "note: 1 Home Assistant configs of the Zigbee2MQTT and Tasmota devices above" in err
    review = review_config(path)
    assert review.issues == []
    assert review.loaded is not None
    config = review.loaded.config
    weather = next(d for d in config.devices if d.id == "weather-station")
    assert (weather.topic, weather.profile) == ("home/weather/state", "json")
    assert weather.fields["temperature"].unit == "°C"
    pump = next(a for a in config.actuators if a.id == "pump-relay/switch")
    assert (pump.profile, pump.topic, pump.payload_on) == ("plain", "home/pump/set", "ON")
    assert pump.confirm is not None
    assert pump.confirm.state_topic == "home/pump/state"
    assert main(["check", "--config", str(path)]) == 0
    assert f"{path}: valid" in capsys.readouterr().out
    assert _discover(broker, "--merge", str(path)) == 0
    assert "nothing new" in capsys.readouterr().err


def test_discover_prints_the_config_and_fails_on_an_empty_broker(
    broker: Mosquitto, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _discover(broker) == 1
    assert "no Zigbee2MQTT, Tasmota or Home Assistant announcements" in capsys.readouterr().err
    _announce(broker)
    assert _discover(broker) == 0
    out = capsys.readouterr().out
    assert "  - id: desk-bulb/light\n" in out
    assert "topic: tele/tasmota_B0C1D3/SENSOR" in out


RUN_SECTIONS = """\
gateway: {{id: discover-{uid}, state_dir: {state}}}
http: {{host: 127.0.0.1, port: {http_port}}}
log: {{level: info, format: json}}
rules:
  - id: warm-living-room
    when: {{sensor: living-room-climate/temperature, above: 25}}
    then:
      - set: kitchen-coffee-plug/switch
        to: {{state: "ON"}}
      - set: washing-machine/relay
        to: {{state: "OFF"}}
  - id: cold-garage
    when: {{sensor: garage-sensor/am2301_temperature, below: 5}}
    then:
      - set: desk-bulb/light
        to: {{state: "ON", brightness: 200}}
      - set: pump-relay/switch
        to: {{state: true}}
"""


def test_run_with_the_discovered_config_reads_the_devices_and_commands_them(
    broker: Mosquitto,
    tmp_path: Path,
    http_port: int,
    gateways: Callable[[Path, int], Gateway],
    watch: Callable[[list[str]], TopicWatch],
) -> None:
    _announce(broker, homeassistant_announcements())
    path = tmp_path / "home.yaml"
    assert _discover(broker, "--write", str(path)) == 0
    extra = RUN_SECTIONS.format(uid=uuid.uuid4().hex[:8], state=tmp_path / "state", http_port=http_port)
    path.write_text(path.read_text(encoding="utf-8") + textwrap.dedent(extra), encoding="utf-8")
    assert main(["check", "--config", str(path)]) == 0
    commands = watch(["zigbee2mqtt/+/set", "zigbee2mqtt/+/+/set", "cmnd/#", "home/pump/set"])
    gateway = gateways(path, http_port).start()
    publish(broker, [
        ("zigbee2mqtt/Living Room Climate", {"temperature": 27.5, "humidity": 40, "linkquality": 90}),
        ("tele/tasmota_B0C1D3/SENSOR",
         {"Time": "2024-05-01T12:00:00", "AM2301": {"Temperature": 2.5, "Humidity": 80}, "TempUnit": "C"}),
    ])  # fmt: skip
    assert commands.wait_for("zigbee2mqtt/Kitchen/Coffee Plug/set")[0].json() == {"state": "ON"}
    assert commands.wait_for("cmnd/tasmota_B0C1D2/POWER")[0].payload == b"OFF"
    assert commands.wait_for("zigbee2mqtt/Desk Bulb/set")[0].json() == {"state": "ON", "brightness": 200}
    assert commands.wait_for("home/pump/set")[0].payload == b"ON"  # a Home Assistant switch: plain text
    deadline = time.monotonic() + 15
    while gateway.readings_seen() < 5:  # temperature, humidity, linkquality; two from the garage
        assert time.monotonic() < deadline, gateway.metrics()
        time.sleep(0.05)
