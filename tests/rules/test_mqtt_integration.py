"""A temperature crossing published to the real Mosquitto makes the actuator's command
topic receive the rule's payload. The MQTT adapters of devices/ are not used: a tiny
in-test loop turns messages into Readings, feeds the engine and publishes Commands."""

from __future__ import annotations

import json
import queue
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from gateway.model import Command, Reading
from rules import Now, RuleEngine
from simulators.testbed import Mosquitto
from tests.rules.helpers import ruleset

RULES = """
rules:
  - id: hot-living-room
    when: {sensor: living-room/temperature, above: 26, hysteresis: 0.5}
    then:
      - set: living-room/ac
        to: {state: "on", target: 22}
    else:
      - set: living-room/ac
        to: {state: "off"}
"""


def _connected(broker: Mosquitto, subscribe: str | None = None) -> mqtt.Client:
    client = broker.client()
    ready = threading.Event()

    def on_connect(c: mqtt.Client, _u: Any, _f: Any, _rc: Any, _p: Any) -> None:
        if subscribe is None:
            ready.set()
        else:
            c.subscribe(subscribe, qos=1)

    client.on_connect = on_connect
    client.on_subscribe = lambda *_args: ready.set()
    client.connect(broker.host, broker.port, keepalive=10)
    client.loop_start()
    assert ready.wait(10), "no CONNACK/SUBACK from mosquitto"
    return client


@pytest.mark.mqtt
def test_crossing_reaches_the_actuator_command_topic(mosquitto: Mosquitto, topic_prefix: str) -> None:
    sensors = f"{topic_prefix}/sensors"
    commands = f"{topic_prefix}/actuators"
    engine = RuleEngine(ruleset(RULES, actuators={"living-room/ac"}), Now(time.monotonic(), time.time()))

    # The gateway side: message -> Reading -> engine -> Command -> JSON on the actuator topic.
    gateway = _connected(mosquitto, subscribe=f"{sensors}/+/+")
    failures: list[BaseException] = []

    def on_reading(client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            device, metric = message.topic.removeprefix(f"{sensors}/").split("/", 1)
            now = Now(time.monotonic(), time.time())
            value = json.loads(message.payload)["value"]
            actions = engine.on_reading(Reading(device, metric, value, now.wall, now.wall), now)
            for action in actions:
                if isinstance(action, Command):
                    client.publish(f"{commands}/{action.actuator}/set", json.dumps(action.payload), qos=1)
        except Exception as exc:  # surfaced by the assertion below
            failures.append(exc)

    gateway.on_message = on_reading

    # The actuator side: what arrives on its command topic.
    arrived: queue.Queue[tuple[str, Any]] = queue.Queue()
    actuator = _connected(mosquitto, subscribe=f"{commands}/#")
    actuator.on_message = lambda _c, _u, m: arrived.put((m.topic, json.loads(m.payload)))

    sensor = _connected(mosquitto)
    try:
        for value in (25.0, 25.8, 26.4, 26.2, 25.4):
            info = sensor.publish(f"{sensors}/living-room/temperature", json.dumps({"value": value}), qos=1)
            info.wait_for_publish(5)
        got = [arrived.get(timeout=10), arrived.get(timeout=10)]
        assert got == [
            (f"{commands}/living-room/ac/set", {"state": "on", "target": 22}),
            (f"{commands}/living-room/ac/set", {"state": "off"}),
        ]
        time.sleep(0.3)
        assert arrived.empty()  # 26.2 stayed within the hysteresis: nothing more
        assert failures == []
    finally:
        for client in (sensor, actuator, gateway):
            client.disconnect()
            client.loop_stop()
