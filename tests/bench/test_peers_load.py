"""``bench.peers_load``: the raw publisher's wire format (pure) and, against the test-bed
Mosquitto, that a paced job arrives whole, in order, with its hot readings stamped."""

from __future__ import annotations

import itertools
import json
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench.peers_load import LoadJob, connect_packet, is_hot, publish_packet, run_job, varint
from simulators.testbed import Mosquitto


def test_varint() -> None:
    assert varint(0) == b"\x00"
    assert varint(127) == b"\x7f"
    assert varint(128) == b"\x80\x01"
    assert varint(16_383) == b"\xff\x7f"
    assert varint(16_384) == b"\x80\x80\x01"


def test_packets() -> None:
    assert publish_packet(b"a/b", b"xy", 0) == b"\x30\x07\x00\x03a/bxy"
    assert publish_packet(b"a/b", b"xy", 1, 258) == b"\x32\x09\x00\x03a/b\x01\x02xy"
    assert connect_packet("c", keepalive=60) == b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x3c\x00\x01c"


def test_hot_readings_are_one_in_ten_staggered_and_never_first() -> None:
    for j in range(20):
        hot = [k for k in range(1, 101) if is_hot(j, k)]
        assert len(hot) == 10
        assert all(b - a == 10 for a, b in itertools.pairwise(hot))
        assert not is_hot(j, 0)
    stream = [is_hot(j, k) for k in range(1, 11) for j in range(10)]
    assert all(sum(stream[i : i + 10]) == 1 for i in range(0, 100, 10))


def test_a_paced_job_arrives_whole_and_in_order(mosquitto: Mosquitto, topic_prefix: str) -> None:
    devices = [f"{topic_prefix}-a", f"{topic_prefix}-b"]
    got: list[tuple[str, dict[str, float]]] = []
    subscribed = threading.Event()
    sub = mqtt.Client(CallbackAPIVersion.VERSION2)
    sub.on_subscribe = lambda *_: subscribed.set()
    sub.on_message = lambda _c, _u, m: got.append((m.topic, json.loads(m.payload)))
    sub.connect(mosquitto.host, mosquitto.port)
    sub.subscribe([(f"zigbee2mqtt/{d}", 1) for d in devices])
    sub.loop_start()
    try:
        assert subscribed.wait(15)
        for qos in (0, 1):
            got.clear()
            job = LoadJob(mosquitto.port, devices, 2000.0, 200, qos)
            result = run_job(job, lambda d: f"{d}/set", lambda: None)
            deadline = time.monotonic() + 15
            while len(got) < 200 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert len(got) == 200
            assert result["sent"] == 200
            sends = result["sends"]
            assert isinstance(sends, dict)
            for j, dev in enumerate(devices):
                mine = [body for topic, body in got if topic == f"zigbee2mqtt/{dev}"]
                assert len(mine) == 100
                hot = [body for body in mine if body["temperature"] > 30]
                assert [body["sent_ns"] for body in hot] == sends[f"{dev}/set"]
                assert len(hot) == sum(is_hot(j, k) for k in range(100))
    finally:
        sub.disconnect()
        sub.loop_stop()
