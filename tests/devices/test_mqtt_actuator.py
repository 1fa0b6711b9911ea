"""MQTT actuators against the real Mosquitto: the command reaches the device's topic in its
profile's shape; read-back confirms it, or counts it as unconfirmed."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections.abc import AsyncIterator, Iterator

import paho.mqtt.client as mqtt
import pytest

from devices.actuators import Actuators
from devices.config import ActuatorConfig, MqttConnection
from devices.mqtt_actuator import MqttCommandLink
from gateway.errors import ActuatorError
from gateway.model import Command
from simulators.testbed import Mosquitto

pytestmark = pytest.mark.mqtt


@contextlib.contextmanager
def fake_devices(
    broker: Mosquitto, topics: list[str], echo: dict[str, str]
) -> Iterator[list[tuple[str, bytes]]]:
    """Subscribes to ``topics``; for a topic in ``echo`` it publishes the received JSON on
    ``echo[topic]`` (as a Zigbee2MQTT device reports its new state)."""
    got: list[tuple[str, bytes]] = []
    ready = threading.Event()
    client = broker.client()

    def on_connect(c: mqtt.Client, *_: object) -> None:
        c.subscribe([(t, 1) for t in topics])

    def on_message(c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        got.append((message.topic, bytes(message.payload)))
        state_topic = echo.get(message.topic)
        if state_topic is not None:
            c.publish(state_topic, message.payload, qos=1)

    client.on_connect = on_connect
    client.on_subscribe = lambda *_: ready.set()
    client.on_message = on_message
    client.connect(broker.host, broker.port)
    client.loop_start()
    assert ready.wait(10)
    try:
        yield got
    finally:
        client.loop_stop()
        client.disconnect()


@contextlib.asynccontextmanager
async def command_link(link: MqttCommandLink) -> AsyncIterator[MqttCommandLink]:
    task = asyncio.create_task(link.run())
    async with asyncio.timeout(10):
        while not link.link.connected:  # noqa: ASYNC110 - set by the link
            await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)  # the state-topic SUBACK
    try:
        yield link
    finally:
        link.stop()
        await asyncio.wait_for(task, 10)


async def test_commands_reach_devices_and_read_back(mosquitto: Mosquitto) -> None:
    p = uuid.uuid4().hex[:6]
    configs = [
        ActuatorConfig.model_validate({"id": "living/ac", "profile": "zigbee2mqtt", "name": f"{p}-ac",
                                       "base_topic": f"{p}z", "confirm": {"timeout": 2.0}}),
        ActuatorConfig.model_validate({"id": "kitchen/plug", "profile": "tasmota", "name": f"{p}-plug",
                                       "confirm": {"timeout": 0.5}}),
        ActuatorConfig(id="valve", profile="json", topic=f"{p}/valve/cmd"),
    ]
    actuators = Actuators(configs)
    conn = MqttConnection(host=mosquitto.host, port=mosquitto.port, client_id=f"edgegw-{p}")
    topics = [f"{p}z/{p}-ac/set", f"cmnd/{p}-plug/#", f"{p}/valve/cmd"]
    with fake_devices(mosquitto, topics, echo={f"{p}z/{p}-ac/set": f"{p}z/{p}-ac"}) as got:
        async with command_link(MqttCommandLink(conn, actuators)):
            now = asyncio.get_running_loop().time
            actuators.apply(Command("living/ac", {"state": "on", "target": 22}, "hot", 0.0), now())
            actuators.apply(Command("kitchen/plug", {"power": True}, "r2", 0.0), now())
            actuators.apply(Command("valve", {"open": False}, None, 0.0), now())
            with pytest.raises(ActuatorError, match="not declared"):
                actuators.apply(Command("garage/door", {"open": True}, None, 0.0), now())
            async with asyncio.timeout(10):
                while actuators.confirmed["living/ac"] < 1 or len(got) < 3:  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
            await asyncio.sleep(0.6)
            late = actuators.check(now())
    assert sorted(got) == sorted([
        (f"{p}z/{p}-ac/set", b'{"state":"on","target":22}'),
        (f"cmnd/{p}-plug/POWER", b"ON"),
        (f"{p}/valve/cmd", b'{"open":false}'),
    ])
    assert [x.actuator for x in late] == ["kitchen/plug"]  # the plug never reported back
    assert actuators.unconfirmed["kitchen/plug"] == 1
    assert actuators.sent == {"living/ac": 1, "kitchen/plug": 1, "valve": 1}


async def test_command_while_broker_unreachable_is_held_not_failed() -> None:
    # what happens to it when the link comes up: tests/devices/test_mqtt_actuator_hold.py
    actuators = Actuators([ActuatorConfig(id="valve", profile="json", topic="v/cmd")])
    conn = MqttConnection(host="127.0.0.1", port=1, client_id="edgegw-nobroker")
    link = MqttCommandLink(conn, actuators)  # not running: not connected
    actuators.apply(Command("valve", {"open": True}, None, 0.0), 0.0)
    assert (actuators.failed, actuators.sent, link.held) == ({}, {}, 1)
    with pytest.raises(ActuatorError, match="not connected"):  # a bare message is not held
        link.publish("v/cmd", b"{}", 1)


async def test_full_paho_queue_holds_commands_back_in_order(mosquitto: Mosquitto) -> None:
    p = uuid.uuid4().hex[:6]
    actuators = Actuators([ActuatorConfig(id="valve", profile="json", topic=f"{p}/valve/cmd")])
    # a paho queue of one: every command waits for the PUBACK of the one before
    conn = MqttConnection(host=mosquitto.host, port=mosquitto.port, client_id=f"edgegw-{p}",
                          max_queued_messages=1)
    with fake_devices(mosquitto, [f"{p}/valve/cmd"], echo={}) as got:
        link = MqttCommandLink(conn, actuators)
        async with command_link(link):
            for i in range(20):
                actuators.apply(Command("valve", {"step": i}, None, 0.0), 0.0)
            assert link.held > 0
            async with asyncio.timeout(10):
                while len(got) < 20:  # noqa: ASYNC110 - filled by paho's thread
                    await asyncio.sleep(0.02)
    assert [payload for _, payload in got] == [f'{{"step":{i}}}'.encode() for i in range(20)]
    assert link.backlog_waits > 0
    assert link.held_dropped == {}
    assert actuators.sent == {"valve": 20}
    assert actuators.failed == {}
