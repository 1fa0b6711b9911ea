"""Overload against the real Mosquitto: the MQTT source, the pipeline, the actuators' link
and a spool writer that is behind (a fake spool whose ``pending`` the test sets: the seam
for "the writer cannot keep up"; the broker and both MQTT connections are real).

- QoS 0: reading is not held; every hot reading the gateway received fires its rule and
  its command reaches the device, while the readings are shed from the spool and counted.
- QoS 1: reading is held until the writer caught up; every reading reaches the spool once.
- One read of a link per loop iteration: a source with a backlog does not starve the
  actuators' link (its PUBACKs) by piling up reads in the ready queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from paho.mqtt.enums import MQTTErrorCode

from devices import Actuators, BadInputCounter, SourceBatch
from devices.mqtt_actuator import MqttCommandLink
from devices.mqtt_source import MqttSource
from gateway.config import load_config
from gateway.ledger import DeliveryLedger
from gateway.model import Reading
from gateway.pipeline import PENDING_HIGH_MIN, Counters, Pipeline
from rules import RuleEngine
from simulators.testbed import Mosquitto
from tests.devices.conftest import running, until
from tests.gateway.test_pipeline import FakeSpool, now

pytestmark = pytest.mark.mqtt

DEVICES = 10
PER_DEVICE = 300
HOT_EVERY = 10


@dataclass
class Bed:
    prefix: str
    pipeline: Pipeline
    spool: FakeSpool
    source: MqttSource
    link: MqttCommandLink
    holds: list[bool]
    received: list[Reading]


@contextlib.asynccontextmanager
async def gateway(broker: Mosquitto, tmp_path: Path) -> AsyncIterator[Bed]:
    """Source, pipeline (with a fake spool) and actuators' link on one loop, as in ``edgegw run``."""
    p = f"q0{uuid.uuid4().hex[:6]}"
    devices = "".join(
        f"  - {{id: d{i}, topic: {p}/d{i}, profile: plain, metric: t}}\n" for i in range(DEVICES)
    )
    actuators = "".join(f"  - {{id: act{i}, profile: json, topic: {p}/act{i}/set}}\n" for i in range(DEVICES))
    rules = "".join(
        f"  - {{id: r{i}, when: {{sensor: d{i}/t, above: 30}}, then: [{{set: act{i}, to: {{on: true}}}}], "
        "max_fires_per_minute: 1000000}\n"
        for i in range(DEVICES)
    )
    config = tmp_path / "edgegw.yaml"
    config.write_text(
        f"gateway: {{id: q0, state_dir: {tmp_path}}}\nhttp: {{enabled: false}}\n"
        f"mqtt: {{host: {broker.host}, port: {broker.port}, client_id: edgegw-{p}}}\n"
        f"devices:\n{devices}actuators:\n{actuators}rules:\n{rules}"
    )
    loaded = load_config(config)
    acts = Actuators(loaded.config.actuators)
    pipeline = Pipeline(acts, Counters(), now=now, bad_input=BadInputCounter())
    spool = FakeSpool()
    pipeline.attach(spool, RuleEngine(loaded.rules, now()), DeliveryLedger())  # type: ignore[arg-type]
    holds: list[bool] = []
    received: list[Reading] = []

    def sink(batch: SourceBatch) -> None:
        received.extend(batch.readings)
        pipeline.on_batch(batch)

    source = MqttSource(loaded.config.mqtt, loaded.config.devices, sink)
    link = MqttCommandLink(loaded.config.mqtt, acts)

    def hold(on: bool) -> None:
        holds.append(on)
        source.hold(on)

    pipeline.hold = hold
    link_task = asyncio.create_task(link.run())
    try:
        async with running(source):
            await until(lambda: link.link.connected)
            yield Bed(p, pipeline, spool, source, link, holds, received)
    finally:
        link.stop()
        await asyncio.wait_for(link_task, 10)


@contextlib.contextmanager
def command_counter(broker: Mosquitto, prefix: str) -> Iterator[list[str]]:
    """A QoS 1 subscriber on every command topic: the devices."""
    got: list[str] = []
    ready = threading.Event()
    client = broker.client()
    client.on_connect = lambda c, *_: c.subscribe(f"{prefix}/+/set", 1)
    client.on_subscribe = lambda *_: ready.set()
    client.on_message = lambda _c, _u, m: got.append(m.topic)
    client.connect(broker.host, broker.port)
    client.loop_start()
    assert ready.wait(10)
    try:
        yield got
    finally:
        client.loop_stop()
        client.disconnect()


def publish_all(broker: Mosquitto, prefix: str, qos: int, per_device: int = PER_DEVICE) -> int:
    """Every device's readings, every ``HOT_EVERY``-th hot, as fast as paho sends; returns the hot count."""
    client = broker.client()
    client.max_queued_messages_set(0)
    client.connect(broker.host, broker.port)
    client.loop_start()
    infos = []
    hot = 0
    for k in range(per_device):
        for i in range(DEVICES):
            is_hot = k % HOT_EVERY == HOT_EVERY - 1
            hot += is_hot
            value = (40.0 if is_hot else 20.0) + k * 1e-3
            info = client.publish(f"{prefix}/d{i}", f"{value}".encode(), qos=qos)
            assert info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS
            infos.append(info)
    for info in infos:
        info.wait_for_publish(30)
    client.loop_stop()
    client.disconnect()
    return hot


async def test_qos0_overload_sheds_readings_but_every_received_hot_reading_sends_its_command(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    async with gateway(mosquitto, tmp_path) as bed:
        bed.spool.pending = PENDING_HIGH_MIN + 1  # the writer is behind and stays behind
        with command_counter(mosquitto, bed.prefix) as arrived:
            await asyncio.to_thread(publish_all, mosquitto, bed.prefix, 0)
            await until(lambda: len(bed.received) == DEVICES * PER_DEVICE, within=30)
            counters = bed.pipeline.counters
            await until(lambda: len(arrived) >= sum(counters.commands.values()), within=30)
    hot_received = sum(isinstance(r.value, float) and r.value > 30 for r in bed.received)
    assert hot_received == DEVICES * PER_DEVICE // HOT_EVERY
    assert sum(counters.fires.values()) == hot_received  # every hot reading received fired...
    assert sum(counters.commands.values()) == hot_received  # ...its command left...
    assert len(arrived) == hot_received  # ...and reached the device
    assert bed.link.held_dropped == {}
    assert counters.shed == {"spool_behind": len(bed.received)}  # readings shed, counted
    assert not any(isinstance(i, Reading) for s in bed.spool.submits for i in s["items"])
    assert sum(len(s["items"]) for s in bed.spool.submits) >= 2 * hot_received  # fired events + commands
    assert bed.holds == []  # never held: the broker did not have to queue (and drop) for us


async def test_qos1_overload_holds_reading_and_loses_nothing(mosquitto: Mosquitto, tmp_path: Path) -> None:
    total = DEVICES * PER_DEVICE
    async with gateway(mosquitto, tmp_path) as bed:
        bed.spool.pending = PENDING_HIGH_MIN + 1
        settled = 0

        async def writer() -> None:
            """The writer catches up once reading was held: every submission is durable."""
            nonlocal settled
            await until(lambda: bool(bed.holds), within=30)
            bed.spool.pending = 0
            while True:
                while settled < len(bed.spool.submits):
                    bed.spool.durable(settled)
                    settled += 1
                await asyncio.sleep(0.005)

        task = asyncio.create_task(writer())
        try:
            with command_counter(mosquitto, bed.prefix) as arrived:
                hot = await asyncio.to_thread(publish_all, mosquitto, bed.prefix, 1)
                await until(lambda: len(bed.received) >= total and bed.source.unacked_batches == 0, within=60)
                await until(lambda: len(arrived) >= hot, within=30)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    counters = bed.pipeline.counters
    assert bed.holds[0] is True  # held while the writer was behind
    assert counters.holds >= 1
    assert counters.shed == {}
    spooled = [i for s in bed.spool.submits for i in s["items"] if isinstance(i, Reading)]
    assert len(spooled) == total  # every reading reached the spool, once
    assert len({(r.device_id, r.value) for r in spooled}) == total
    assert sum(counters.commands.values()) == hot
    assert len(arrived) == hot


async def test_a_link_with_a_backlog_is_read_once_per_loop_iteration(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """A held source with thousands of messages waiting: once released, each of its reads
    must come in a loop iteration of its own (other links, the actuators' PUBACKs, get a
    turn in between), however much its buffer holds."""
    iteration = 0
    stop = False

    def tick() -> None:  # runs once per loop iteration
        nonlocal iteration
        iteration += 1
        if not stop:
            asyncio.get_running_loop().call_soon(tick)

    async with gateway(mosquitto, tmp_path) as bed:
        bed.source.hold(True)
        backlog = DEVICES * 3000  # more than one read of the socket (256 KiB) takes
        await asyncio.to_thread(publish_all, mosquitto, bed.prefix, 0, 3000)
        await asyncio.sleep(0.5)  # in the socket's buffers and the broker's queue
        seen: list[int] = []
        real = bed.source._sink

        def sink(batch: SourceBatch) -> None:
            seen.append(iteration)
            real(batch)

        bed.source._sink = sink
        tick()
        bed.source.hold(False)
        try:
            await until(lambda: len(bed.received) == backlog, within=60)
        finally:
            stop = True
    assert len(seen) >= 3  # the backlog came in several reads
    assert len(seen) == len(set(seen))  # never two reads of the source in one iteration
