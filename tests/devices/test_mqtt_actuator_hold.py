"""Commands while the actuators' MQTT link is down, against the real Mosquitto: they are held,
in order, and sent once the link is (back) up; too old ones and overflow are dropped and
counted, never sent late; read-back still confirms a command sent after the reconnect."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from structlog.testing import capture_logs

from devices.actuators import Actuators
from devices.config import ActuatorConfig, MqttConnection
from devices.mqtt_actuator import MqttCommandLink
from gateway.model import Command
from simulators.testbed import Mosquitto
from tests.devices.conftest import until

pytestmark = pytest.mark.mqtt


@contextlib.contextmanager
def device(
    broker: Mosquitto, topics: list[str], *, echo: dict[str, str] | None = None, client_id: str | None = None
) -> Iterator[list[tuple[str, bytes]]]:
    """A device subscribed to ``topics`` at QoS 1, collecting what arrives; with ``client_id``
    on a persistent session (it gets what was published while it reconnected). A topic in
    ``echo`` is reported back on ``echo[topic]`` (read-back)."""
    got: list[tuple[str, bytes]] = []
    ready = threading.Event()
    client = broker.client(client_id, clean_session=client_id is None)

    def on_connect(c: mqtt.Client, *_: object) -> None:
        c.subscribe([(t, 1) for t in topics])

    def on_message(c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        got.append((message.topic, bytes(message.payload)))
        state_topic = (echo or {}).get(message.topic)
        if state_topic is not None:
            c.publish(state_topic, message.payload, qos=1)

    client.on_connect = on_connect
    client.on_subscribe = lambda *_: ready.set()
    client.on_message = on_message
    client.reconnect_delay_set(1, 1)
    client.connect(broker.host, broker.port)
    client.loop_start()
    assert ready.wait(10)
    try:
        yield got
    finally:
        client.loop_stop()
        client.disconnect()


@contextlib.asynccontextmanager
async def running(link: MqttCommandLink) -> AsyncIterator[MqttCommandLink]:
    task = asyncio.create_task(link.run())
    try:
        await until(lambda: link.link.connected)
        yield link
    finally:
        link.stop()
        await asyncio.wait_for(task, 10)


def conn_for(broker: Mosquitto, p: str, **kw: Any) -> MqttConnection:
    return MqttConnection(host=broker.host, port=broker.port, client_id=f"edgegw-{p}",
                          reconnect_min=0.1, reconnect_max=0.5, **kw)  # fmt: skip


def steps(got: list[tuple[str, bytes]], topic: str) -> list[bytes]:
    return [payload for t, payload in got if t == topic]


def step(i: int) -> bytes:
    return f'{{"step":{i}}}'.encode()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_commands_before_the_link_connects_arrive_in_order_once_it_does(mosquitto: Mosquitto) -> None:
    """The restart case: rules fire on the broker's backlog before the link is up."""
    p = uuid.uuid4().hex[:6]
    valve = f"{p}/valve/cmd"
    actuators = Actuators([
        ActuatorConfig(id="valve", profile="json", topic=valve),
        ActuatorConfig.model_validate({"id": "living/ac", "profile": "zigbee2mqtt", "name": f"{p}-ac",
                                       "base_topic": f"{p}z", "confirm": {"timeout": 5.0}}),
    ])
    link = MqttCommandLink(conn_for(mosquitto, p), actuators)  # not running yet: not connected
    now = asyncio.get_running_loop().time
    with device(mosquitto, [valve, f"{p}z/{p}-ac/set"], echo={f"{p}z/{p}-ac/set": f"{p}z/{p}-ac"}) as got:
        for i in range(50):
            actuators.apply(Command("valve", {"step": i}, "r", 0.0), now())
        actuators.apply(Command("living/ac", {"state": "on"}, "hot", 0.0), now())
        assert actuators.failed == {}  # held, not failed
        assert actuators.sent == {}  # and not sent yet
        assert link.held == 51
        async with running(link):
            await until(lambda: len(got) >= 51 and actuators.confirmed["living/ac"] == 1)
            assert actuators.check(now()) == []
    assert steps(got, valve) == [step(i) for i in range(50)]
    assert steps(got, f"{p}z/{p}-ac/set") == [b'{"state":"on"}']
    assert actuators.sent == {"valve": 50, "living/ac": 1}
    assert link.sent_late == {"valve": 50, "living/ac": 1}
    assert actuators.unconfirmed == {}
    assert link.held == 0
    assert link.held_dropped == {}


async def test_commands_older_than_the_age_bound_are_not_sent(mosquitto: Mosquitto) -> None:
    p = uuid.uuid4().hex[:6]
    valve = f"{p}/valve/cmd"
    clock = FakeClock()
    actuators = Actuators([ActuatorConfig(id="valve", profile="json", topic=valve)])
    link = MqttCommandLink(conn_for(mosquitto, p, command_hold_max_age=30.0), actuators, monotonic=clock)
    with device(mosquitto, [valve]) as got, capture_logs() as logs:
        for i in range(3):
            actuators.apply(Command("valve", {"step": i}, "r", 0.0), clock.now)
        clock.now += 20
        for i in range(3, 5):
            actuators.apply(Command("valve", {"step": i}, "r", 0.0), clock.now)
        clock.now += 20  # the first three are 40 s old, the last two 20 s
        async with running(link):
            await until(lambda: link.held == 0)
            actuators.apply(Command("valve", {"step": 5}, "r", 0.0), clock.now)  # a live one
            await until(lambda: len(got) >= 3)
            await asyncio.sleep(0.2)  # nothing else is on its way
    assert steps(got, valve) == [step(3), step(4), step(5)]
    assert link.held_dropped == {("valve", "too_old"): 3}
    assert link.sent_late == {"valve": 2}
    assert actuators.sent == {"valve": 3}
    assert actuators.failed == {}
    dropped = [e for e in logs if e["log_level"] == "warning" and "dropped" in e["event"]]
    assert len(dropped) == 1  # one line for the burst
    assert dropped[0]["dropped"] == {"valve/too_old": 3}


async def test_a_full_hold_queue_drops_the_oldest(mosquitto: Mosquitto) -> None:
    p = uuid.uuid4().hex[:6]
    valve = f"{p}/valve/cmd"
    actuators = Actuators([ActuatorConfig(id="valve", profile="json", topic=valve)])
    link = MqttCommandLink(conn_for(mosquitto, p, command_hold_max=5), actuators)
    with device(mosquitto, [valve]) as got, capture_logs() as logs:
        for i in range(25):
            actuators.apply(Command("valve", {"step": i}, "r", 0.0), 0.0)
        assert link.held == 5
        assert link.held_dropped == {("valve", "queue_full"): 20}
        async with running(link):
            await until(lambda: len(got) >= 5)
            await asyncio.sleep(0.2)
    assert steps(got, valve) == [step(i) for i in range(20, 25)]
    assert link.sent_late == {"valve": 5}
    assert actuators.failed == {}
    dropped = [e for e in logs if e["log_level"] == "warning" and "dropped" in e["event"]]
    assert len(dropped) <= 2  # the burst's first drop, and its total once the link is back
    assert dropped[-1]["dropped"] == {"valve/queue_full": 20}


@pytest.mark.slow
async def test_commands_while_the_broker_restarts_arrive_after_it_is_back(mosquitto_workdir: Path) -> None:
    broker = Mosquitto(mosquitto_workdir).start()
    p = uuid.uuid4().hex[:6]
    valve = f"{p}/valve/cmd"
    actuators = Actuators([ActuatorConfig(id="valve", profile="json", topic=valve)])
    link = MqttCommandLink(conn_for(broker, p), actuators)
    apply: Callable[[int], None] = lambda i: actuators.apply(Command("valve", {"step": i}, "r", 0.0), 0.0)  # noqa: E731
    try:
        with device(broker, [valve], client_id=f"dev-{p}") as got:
            async with running(link):
                for i in range(5):
                    apply(i)
                await until(lambda: len(got) >= 5)
                await asyncio.to_thread(broker.stop)
                await until(lambda: not link.link.connected)
                for i in range(5, 15):
                    apply(i)
                assert link.held == 10
                await asyncio.to_thread(broker.start)
                await until(lambda: len({payload for _, payload in got}) >= 15, within=30)
    finally:
        broker.stop()
    payloads = steps(got, valve)
    assert sorted(set(payloads), key=payloads.index) == [step(i) for i in range(15)]
    assert [x for x in payloads if x in {step(i) for i in range(5, 15)}] == [step(i) for i in range(5, 15)]
    assert actuators.failed == {}
    assert link.sent_late == {"valve": 10}
    assert link.held_dropped == {}


@pytest.mark.slow
async def test_what_paho_kept_from_a_long_lost_connection_is_not_sent_late(mosquitto_workdir: Path) -> None:
    """paho sends its unacknowledged messages again on reconnect, however old: not when even
    the newest of them is older than the age bound."""
    broker = Mosquitto(mosquitto_workdir).start()
    p = uuid.uuid4().hex[:6]
    valve = f"{p}/valve/cmd"
    clock = FakeClock()
    actuators = Actuators([ActuatorConfig(id="valve", profile="json", topic=valve)])
    link = MqttCommandLink(conn_for(broker, p, command_hold_max_age=30.0), actuators, monotonic=clock)
    try:
        with device(broker, [valve], client_id=f"dev-{p}") as got:
            subscribed = time.time()
            db = broker.workdir / "data" / "mosquitto.db"
            # the device's session must outlive the SIGKILL: wait for an autosave after its SUBACK
            await until(lambda: db.exists() and db.stat().st_mtime > subscribed)
            async with running(link):
                assert broker.pid is not None
                os.kill(broker.pid, signal.SIGSTOP)  # frozen: takes the command, never acknowledges
                actuators.apply(Command("valve", {"step": 0}, "r", 0.0), clock.now)
                assert actuators.sent == {"valve": 1}  # handed to paho
                clock.now += 40
                await asyncio.to_thread(broker.kill)
                await until(lambda: not link.link.connected)
                await asyncio.to_thread(broker.start)
                await until(lambda: link.link.connected, within=30)
                actuators.apply(Command("valve", {"step": 1}, "r", 0.0), clock.now)
                await until(lambda: len(got) >= 1, within=30)
                await asyncio.sleep(0.3)  # a resent step 0 would be here by now
    finally:
        broker.stop()
    assert steps(got, valve) == [step(1)]
    assert link.held_dropped == {("valve", "resend_too_old"): 1}
