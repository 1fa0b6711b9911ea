"""MQTT ingest throughput: the edgegw MQTT source next to a bare paho subscriber.

    .venv/bin/python -m bench.mqtt_ingest [--messages 50000] [--runs 5] [--protocol 3.1.1|5]

Starts its own Mosquitto (the test bed's), then per run:

1. both subscribers register a persistent session (QoS 1) and go away;
2. a simulated fleet (100 devices, Zigbee2MQTT, Tasmota, JSON and plain payloads)
   publishes N messages; the broker queues a copy for each absent session;
3. each subscriber in turn connects and drains its queue: the bare paho client only
   counts messages (auto-ack, ``loop_forever``); the edgegw source decodes every message
   into ``Reading`` objects, hands batches to a sink that acks at once, and sends the
   PUBACKs after the sink acked.

Preloading the queue measures how fast each side can take messages, not how fast the
publisher can send them. The subscriber runs pinned to one core, Mosquitto to another
(when there are two). Prints the median of the runs; the figure is the ratio of the
source's messages/s to the bare subscriber's. Never asserted in tests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from devices.config import DeviceConfig, MqttConnection
from devices.mqtt_source import MqttSource
from devices.sink import SourceBatch
from simulators.fleet import FleetSpec
from simulators.mqtt_publisher import BrokerTarget, publish_fleet
from simulators.testbed import Mosquitto

FLEET = {
    "seed": 11,
    "rate": 1000,
    "groups": [
        {"kind": "temperature", "count": 40, "profile": "zigbee2mqtt"},
        {"kind": "motion", "count": 15, "profile": "zigbee2mqtt"},
        {"kind": "power", "count": 15, "profile": "tasmota"},
        {"kind": "co2", "count": 15, "profile": "json"},
        {"kind": "door", "count": 15, "profile": "plain"},
    ],
}


def _pin(pid: int, cpu: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        os.sched_setaffinity(pid, {cpu})


def _topics(devices: list[DeviceConfig]) -> list[str]:
    return sorted({d.topic for d in devices if d.topic})


def _v5(protocol: str) -> bool:
    return protocol == "5"


def _bare_client(broker: Mosquitto, client_id: str, protocol: str) -> mqtt.Client:
    if _v5(protocol):
        return mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                           protocol=MQTTProtocolVersion.MQTTv5)
    return mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False,
                       protocol=MQTTProtocolVersion.MQTTv311)


def _connect_kwargs(protocol: str) -> dict[str, object]:
    if not _v5(protocol):
        return {}
    from paho.mqtt.packettypes import PacketTypes  # noqa: PLC0415
    from paho.mqtt.properties import Properties  # noqa: PLC0415

    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 3600
    return {"clean_start": False, "properties": props}


def bare_register(broker: Mosquitto, client_id: str, topics: list[str], protocol: str) -> None:
    client = _bare_client(broker, client_id, protocol)
    done = threading.Event()
    client.on_subscribe = lambda *_: done.set()
    client.connect(broker.host, broker.port, **_connect_kwargs(protocol))  # type: ignore[arg-type]
    client.subscribe([(t, 1) for t in topics])
    while not done.is_set():
        client.loop(0.1)
    client.disconnect()


def bare_drain(broker: Mosquitto, client_id: str, count: int, protocol: str) -> float:
    """Messages/s of a paho subscriber that only counts."""
    client = _bare_client(broker, client_id, protocol)
    state = {"n": 0, "first": 0.0, "last": 0.0}

    def on_message(c: mqtt.Client, _u: object, _m: mqtt.MQTTMessage) -> None:
        n = state["n"] = state["n"] + 1
        if n == 1:
            state["first"] = time.perf_counter()
        if n >= count:
            state["last"] = time.perf_counter()
            c.disconnect()

    client.on_message = on_message
    client.connect(broker.host, broker.port, **_connect_kwargs(protocol))  # type: ignore[arg-type]
    client.loop_forever()
    return (count - 1) / (state["last"] - state["first"])


async def source_drain(
    broker: Mosquitto, client_id: str, devices: list[DeviceConfig], count: int | None, protocol: str
) -> tuple[float, float]:
    """(messages/s, readings/s) of the edgegw source; ``count=None`` only registers."""
    conn = MqttConnection(host=broker.host, port=broker.port, client_id=client_id, protocol=protocol)
    state = {"first": 0.0, "last": 0.0, "readings": 0, "skip_messages": 0, "skip_readings": 0}
    finished = asyncio.Event()
    source: MqttSource

    def sink(batch: SourceBatch, /) -> None:
        readings = batch.readings
        if not state["first"]:
            # like the bare client's clock, which starts at its first message: the
            # messages of this first batch were read before the clock started
            state["first"] = time.perf_counter()
            state["skip_messages"] = source.messages
            state["skip_readings"] = len(readings)
        state["readings"] += len(readings)
        batch.durable()
        if count is not None and source.messages >= count:
            state["last"] = time.perf_counter()
            finished.set()

    source = MqttSource(conn, devices, sink)
    task = asyncio.create_task(source.run())
    if count is None:
        await source.subscribed.wait()
    else:
        await finished.wait()
    source.stop()
    await task
    if count is None:
        return 0.0, 0.0
    elapsed = state["last"] - state["first"]
    return ((source.messages - state["skip_messages"]) / elapsed,
            (state["readings"] - state["skip_readings"]) / elapsed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--protocol", choices=("3.1.1", "5"), default="3.1.1")
    parser.add_argument("--processes", type=int, default=2, help="publisher processes for the preload")
    args = parser.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

    spec = FleetSpec.model_validate(FLEET)
    devices = [DeviceConfig.model_validate(d) for d in spec.gateway_devices()]
    topics = _topics(devices)
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]
    bare_rates: list[float] = []
    source_rates: list[float] = []
    reading_rates: list[float] = []
    with tempfile.TemporaryDirectory() as tmp, Mosquitto(Path(tmp)) as broker:
        if broker.pid is not None and len(cpus) > 1:
            _pin(broker.pid, cpus[0])
        _pin(0, cpus[-1])
        print(f"mosquitto on {broker.host}:{broker.port}; {len(devices)} devices, MQTT {args.protocol}, "
              f"{args.messages:,} QoS 1 messages per run, {args.runs} runs, "
              f"subscriber pinned to cpu {cpus[-1]}")
        for run in range(args.runs):
            bare_id = f"bench-bare-{uuid.uuid4().hex[:6]}"
            source_id = f"bench-src-{uuid.uuid4().hex[:6]}"
            bare_register(broker, bare_id, topics, args.protocol)
            asyncio.run(source_drain(broker, source_id, devices, None, args.protocol))
            from simulators.run import run_fleet  # noqa: PLC0415

            target = BrokerTarget(broker.host, broker.port)
            if args.processes > 1:
                sent = run_fleet(spec, target, rate=1e9, duration=600, processes=args.processes,
                                 max_messages=args.messages).messages
            else:
                sent = publish_fleet(spec, target, rate=0, max_messages=args.messages).messages
            order = ("bare", "source") if run % 2 == 0 else ("source", "bare")
            for who in order:
                if who == "bare":
                    bare_rates.append(bare_drain(broker, bare_id, sent, args.protocol))
                else:
                    drain = source_drain(broker, source_id, devices, sent, args.protocol)
                    msgs, readings = asyncio.run(drain)
                    source_rates.append(msgs)
                    reading_rates.append(readings)
            print(f"run {run + 1}: bare paho {bare_rates[-1]:>9,.0f} msg/s   edgegw source "
                  f"{source_rates[-1]:>9,.0f} msg/s ({reading_rates[-1]:,.0f} readings/s)   "
                  f"ratio {source_rates[-1] / bare_rates[-1]:.2f}", flush=True)
    bare = statistics.median(bare_rates)
    src = statistics.median(source_rates)
    ratio = statistics.median(s / b for s, b in zip(source_rates, bare_rates, strict=True))
    print(f"median of {args.runs} runs: bare paho subscriber {bare:,.0f} msg/s; edgegw MQTT source "
          f"{src:,.0f} msg/s = {statistics.median(reading_rates):,.0f} readings/s; ratio {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
