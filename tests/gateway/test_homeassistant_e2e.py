"""Home Assistant MQTT discovery against the real Mosquitto, with ``edgegw run`` as a
process and the demo fleet publishing (issue 14). What Home Assistant would see:

- the retained device-based configs match the declared devices and actuators, field by
  field, and validate against schemas/homeassistant/device-discovery.schema.json;
  Zigbee2MQTT's devices and actuators are left to Zigbee2MQTT;
- ``ON`` on a switch's command topic reaches the actuator through edgegw (and is spooled
  like a rule's command); a payload the entity does not take reaches nothing;
- ``online`` on ``homeassistant/status`` republishes every config;
- a device removed from the config loses its config (empty retained), across a restart;
- availability: ``online`` while running, ``offline`` by the last will after SIGKILL.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import paho.mqtt.client as mqtt
import pytest

from bridge.groups import read_lane
from simulators.testbed import Mosquitto
from tests.gateway.conftest import (
    DEMO_RULES,
    ROOT,
    Gateway,
    gateway_config,
    simulate,
    write_config,
)

pytestmark = [pytest.mark.mqtt]

SCHEMA = json.loads((ROOT / "schemas" / "homeassistant" / "device-discovery.schema.json").read_text())
PROBE = {"id": "probe", "topic": "test/probe/temperature", "profile": "plain", "unit": "°C"}
PROBE_RULE = {"id": "probe-hot", "when": {"sensor": "probe/temperature", "above": 30},
              "then": [{"emit": {"severity": "warning"}}]}  # fmt: skip
# metric -> (platform, unit, device class): what the demo fleet's devices announce
EXPECTED_ENTITIES = {
    "contact": ("binary_sensor", None, "door"),
    "power": ("sensor", "W", "power"),
    "energy": ("sensor", "kWh", "energy"),
    "co2": ("sensor", "ppm", "carbon_dioxide"),
    "temperature": ("sensor", "°C", "temperature"),
}


class Retained:
    """Every message on ``filters`` (the retained ones first), newest per topic."""

    def __init__(self, broker: Mosquitto, filters: list[str]) -> None:
        self.last: dict[str, bytes] = {}
        self._cond = threading.Condition()
        self.client = broker.client(f"ha-{uuid.uuid4().hex[:8]}")
        self.client.on_message = self._on_message
        self.client.on_connect = lambda client, *_a: client.subscribe([(f, 1) for f in filters])
        self.client.connect(broker.host, broker.port, keepalive=30)
        self.client.loop_start()

    def _on_message(self, _client: mqtt.Client, _userdata: object, message: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.last[message.topic] = bytes(message.payload)
            self._cond.notify_all()

    def wait(self, predicate: Callable[[dict[str, bytes]], bool], what: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self.last):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{what}: not within {timeout} s; have {sorted(self.last)}")
                self._cond.wait(min(left, 0.2))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def retained(broker: Mosquitto) -> Any:
    made: list[Retained] = []

    def make(filters: list[str]) -> Retained:
        made.append(Retained(broker, filters))
        return made[-1]

    yield make
    for item in made:
        item.close()


def publish_raw(broker: Mosquitto, topic: str, payload: bytes) -> None:
    """As Home Assistant publishes: the payload as it is (not JSON-encoded), QoS 1."""
    client = broker.client(f"ha-pub-{uuid.uuid4().hex[:8]}")
    client.connect(broker.host, broker.port, keepalive=30)
    client.loop_start()
    try:
        client.publish(topic, payload, qos=1).wait_for_publish(timeout=15)
    finally:
        client.disconnect()
        client.loop_stop()


def _config(tmp_path: Path, broker: Mosquitto, http_port: int, *, probe: bool = True) -> dict[str, Any]:
    config = gateway_config(tmp_path, (broker.host, broker.port), http_port=http_port, include=[DEMO_RULES],
                            rules=[PROBE_RULE] if probe else [])  # fmt: skip
    if probe:
        config["devices"].append(PROBE)
    config["homeassistant"] = {"enabled": True}
    return config


def _configs(last: dict[str, bytes]) -> dict[str, dict[str, Any]]:
    return {t: json.loads(p) for t, p in last.items() if t.endswith("/config") and p}


def test_discovery_commands_birth_and_removal(
    broker: Mosquitto, tmp_path: Path, http_port: int, gateways: Any, retained: Any, watch: Any
) -> None:
    config = _config(tmp_path, broker, http_port)
    gw = config["gateway"]["id"]
    base = f"edgegw/{gw}"
    path = write_config(tmp_path / "edgegw.yaml", config)
    commands = watch(["cmnd/#"])
    seen = retained(["homeassistant/#", f"{base}/#"])  # as Home Assistant: there before edgegw
    gateway: Gateway = gateways(path, http_port).start()
    simulate(broker, count=200, rate=400.0)
    ours = {d["id"]: d for d in config["devices"] if d["profile"] != "zigbee2mqtt"}

    def node(name: str) -> str:
        return f"edgegw_{gw}_{name}"

    expected_topics = {f"homeassistant/device/{node(d)}/config" for d in [*ours, "office"]}
    expected_topics.add(f"homeassistant/device/edgegw_{gw}/config")  # the rule alarms

    def complete(last: dict[str, bytes]) -> bool:
        """Every config there, each device with its metrics (the plain doors' come with their values)."""
        configs = _configs(last)
        return expected_topics <= set(configs) and all(configs[t]["components"] for t in expected_topics)

    seen.wait(complete, "discovery of every non-Zigbee2MQTT device")
    configs = _configs(seen.last)
    for topic, payload in configs.items():
        jsonschema.validate(payload, SCHEMA)
        assert payload["origin"]["name"] == "edgegw", topic
    # Zigbee2MQTT announces its own devices (temp-01...) and actuators (hall/light...)
    assert set(configs) == expected_topics

    for device_id, device in ours.items():
        payload = configs[f"homeassistant/device/{node(device_id)}/config"]
        assert payload["device"]["identifiers"] == [node(device_id)]
        assert payload["device"]["name"] == device_id
        assert payload["device"]["via_device"] == f"edgegw_{gw}"
        assert payload["state_topic"] == f"{base}/devices/{device_id}/state"
        assert payload["availability"] == [{"topic": f"{base}/availability"},
                                           {"topic": f"{base}/devices/{device_id}/availability"}]  # fmt: skip
        assert payload["availability_mode"] == "all"
        metrics = {spec["metric"] for spec in device.get("fields", {}).values()}
        if device["profile"] == "plain" and device_id.startswith("door"):
            metrics = {"contact"}
        if device_id == "probe":
            metrics = {"temperature"}
        assert set(payload["components"]) == metrics, device_id
        for metric, component in payload["components"].items():
            platform, unit, device_class = EXPECTED_ENTITIES[metric]
            assert component["platform"] == platform, (device_id, metric)
            assert component["unique_id"] == f"{node(device_id)}_{metric}"
            assert component.get("unit_of_measurement") == unit, (device_id, metric)
            assert component.get("device_class") == device_class, (device_id, metric)
            assert f'value_json["{metric}"]' in component["value_template"]
    office = configs[f"homeassistant/device/{node('office')}/config"]
    vent = office["components"]["office_ventilation"]
    assert vent == {
        "platform": "switch", "unique_id": f"{node('office')}_office_ventilation", "name": "Ventilation",
        "command_topic": f"{base}/actuators/office/ventilation/set", "payload_on": "ON", "payload_off": "OFF",
        "state_topic": f"{base}/actuators/office/ventilation/state", "state_on": "ON", "state_off": "OFF",
        "value_template": "{{ value_json.state }}",
    }  # fmt: skip
    alarms = configs[f"homeassistant/device/edgegw_{gw}/config"]["components"]
    assert set(alarms) == {
        "rule_bedroom-fan",
        "rule_front-door-open",
        "rule_big-load-on-plug",
        "rule_probe-hot",
    }
    assert alarms["rule_probe-hot"]["state_topic"] == f"{base}/rules/probe-hot/state"
    seen.wait(lambda last: last.get(f"{base}/availability") == b"online", "the gateway online")
    seen.wait(lambda last: last.get(f"{base}/devices/co2-01/availability") == b"online", "co2-01 online")
    seen.wait(lambda last: json.loads(last.get(f"{base}/devices/co2-01/state", b"{}")).get("co2") is not None,
              "co2-01's state")  # fmt: skip

    # a command from Home Assistant reaches the actuator through edgegw, checked and logged
    before = len(commands.on("cmnd/office-vent/POWER"))  # the fleet's CO2 drove it already
    publish_raw(broker, f"{base}/actuators/office/ventilation/set", b"BLAH")
    gateway.wait_log("home assistant command refused")
    mark = len(gateway.logs)
    publish_raw(broker, f"{base}/actuators/office/ventilation/set", b"OFF")
    sent = commands.wait_for("cmnd/office-vent/POWER", count=before + 1)
    assert [m.payload for m in sent[before:]] == [b"off"]  # the rules' own off value, as Tasmota takes it
    logged = gateway.wait_log("home assistant command", after=mark)
    assert (logged["event"], logged["actuator"], logged["payload"]) == (
        "home assistant command", "office/ventilation", {"state": "off"})  # fmt: skip
    scraped = gateway.metrics()
    assert scraped[("edgegw_homeassistant_commands_total", (("actuator", "office/ventilation"),))] == 1
    assert (
        scraped[("edgegw_homeassistant_commands_refused_total", (("actuator", "office/ventilation"),))] == 1
    )
    assert scraped[("edgegw_homeassistant_connected", ())] == 1
    status = json.loads(gateway.get("/api/status")[1])
    assert status["gateway"]["links"]["homeassistant"]["state"] == "up"
    vent_status = next(a for a in status["actuators"] if a["id"] == "office/ventilation")
    assert (vent_status["last_command"], vent_status["rule"]) == ({"state": "off"}, "homeassistant")
    seen.wait(lambda last: last.get(f"{base}/actuators/office/ventilation/state") == b'{"state": "OFF"}',
              "the switch's state")  # fmt: skip

    # Home Assistant restarts: its birth message brings every config again
    live = watch(["homeassistant/device/+/config"])
    publish_raw(broker, "homeassistant/status", b"online")
    for topic in expected_topics:
        assert json.loads(live.wait_for(topic)[0].payload) == configs[topic]

    # the probe leaves the config: its HA device goes, also across the restart
    code, _ = gateway.terminate()
    assert code == 0
    assert seen.last[f"{base}/availability"] == b"offline"
    spool = sqlite3.connect(tmp_path / "state" / "spool.db")
    lanes = [lane for (lane,) in spool.execute("SELECT DISTINCT prio FROM groups")]
    records = [r for lane in lanes for r in read_lane(spool, lane, 0, 1_000_000)]
    spool.close()
    assert any(b"homeassistant" in data for *_, data in records), "the command was not spooled"
    # ... and plug-01 no longer reads its energy: that one entity goes, the device stays
    smaller = _config(tmp_path, broker, http_port, probe=False) | {"gateway": config["gateway"]}
    plug = next(d for d in smaller["devices"] if d["id"] == "plug-01")
    plug["fields"] = {k: v for k, v in plug["fields"].items() if v["metric"] != "energy"}
    write_config(path, smaller)
    gateway = gateways(path, http_port).start()
    probe_topic = f"homeassistant/device/{node('probe')}/config"
    plug_topic = f"homeassistant/device/{node('plug-01')}/config"
    seen.wait(lambda last: last.get(probe_topic) == b"", "the probe's config cleared")
    seen.wait(lambda last: json.loads(last[plug_topic])["components"]["energy"] == {"platform": "sensor"},
              "plug-01's energy entity removed")  # fmt: skip
    assert (
        json.loads(seen.last[plug_topic])["components"]["power"] == configs[plug_topic]["components"]["power"]
    )
    gateway.terminate()
    after = retained(["homeassistant/#"])
    after.wait(lambda last: f"homeassistant/device/{node('co2-01')}/config" in last, "retained configs")
    assert probe_topic not in after.last
    # started again, edgegw knows it removed them already: the next config is just the live ones
    live = watch([plug_topic])
    gateway = gateways(path, http_port).start()
    assert set(json.loads(live.wait_for(plug_topic)[0].payload)["components"]) == {"power"}
    gateway.terminate()


def test_reload_announces_a_new_device_and_the_last_will_marks_the_gateway_offline(
    broker: Mosquitto, tmp_path: Path, http_port: int, gateways: Any, retained: Any
) -> None:
    config = _config(tmp_path, broker, http_port)
    gw = config["gateway"]["id"]
    topic = f"edgegw/{gw}/availability"
    path = write_config(tmp_path / "edgegw.yaml", config)
    gateway: Gateway = gateways(path, http_port).start()
    seen = retained([topic, "homeassistant/device/+/config"])
    seen.wait(lambda last: last.get(topic) == b"online", "online while running")
    probe_topic = f"homeassistant/device/edgegw_{gw}_probe/config"
    seen.wait(lambda last: probe_topic in last, "the probe announced")
    before = json.loads(seen.last[probe_topic])

    # SIGHUP with one more device: announced; the others keep their unique ids
    config["devices"].append({"id": "cellar", "topic": "test/cellar", "profile": "json",
                              "fields": {"h": {"metric": "humidity", "unit": "%"}}})  # fmt: skip
    write_config(path, config)
    gateway.send(signal.SIGHUP)
    cellar_topic = f"homeassistant/device/edgegw_{gw}_cellar/config"
    seen.wait(lambda last: cellar_topic in last, "the new device announced after the reload")
    humidity = json.loads(seen.last[cellar_topic])["components"]["humidity"]
    assert (humidity["device_class"], humidity["unit_of_measurement"]) == ("humidity", "%")
    assert json.loads(seen.last[probe_topic]) == before
    assert gateway.process is not None
    gateway.process.send_signal(signal.SIGKILL)
    gateway.process.wait(timeout=10)
    seen.wait(lambda last: last.get(topic) == b"offline", "offline by the last will")
    later = retained([topic])  # what Home Assistant finds when it starts now
    later.wait(lambda last: last.get(topic) == b"offline", "offline kept (retained)")
