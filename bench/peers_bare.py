"""The reference peer of ``bench.peers``: a bare paho subscriber that commands on hot readings.

    python -c "import sys; from bench.peers_bare import main; sys.exit(main(sys.argv[1:]))" \
        --port PORT --qos 0|1

(started so by ``bench.peers``; not runnable with ``-m``, so that ``./scripts/bench``, which
runs every ``bench/*.py``, does not start it without its arguments).

Subscribes to ``zigbee2mqtt/+`` (the sensor topics) with a clean session, parses every
reading and, when ``temperature > 30``, publishes ``{"state":"ON"}`` (the bytes edgegw's
zigbee2mqtt actuator sends) to ``zigbee2mqtt/act-<n>/set`` right away, at the QoS of the
run. Nothing else: no state, no durability. Runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

THRESHOLD = 30.0
COMMAND = b'{"state":"ON"}'  # devices.actuators.encode_command of {"state": "ON"}, zigbee2mqtt
SENSORS = "zigbee2mqtt/+"


def command_topic(sensor_topic: str) -> str:
    """``zigbee2mqtt/t-0001`` -> ``zigbee2mqtt/act-0001/set`` (bench.e2e_bench.Layout.actuator)."""
    base, _, device = sensor_topic.rpartition("/")
    return f"{base}/act-{device.split('-', 1)[1]}/set"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--qos", type=int, choices=(0, 1), default=1)
    args = parser.parse_args(argv)
    qos: int = args.qos
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-bare-{uuid.uuid4().hex[:6]}")
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)  # unbounded: a reference drops nothing of its own
    out_topics: dict[str, str] = {}

    def on_message(c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        try:
            value = json.loads(msg.payload)["temperature"]
        except (ValueError, KeyError, TypeError):
            return
        if value > THRESHOLD:
            topic = out_topics.get(msg.topic)
            if topic is None:
                topic = out_topics[msg.topic] = command_topic(msg.topic)
            c.publish(topic, COMMAND, qos=qos)

    def on_connect(c: mqtt.Client, *_: object) -> None:
        c.subscribe(SENSORS, qos)

    client.on_message = on_message
    client.on_connect = on_connect
    signal.signal(signal.SIGTERM, lambda *_: client.disconnect())
    client.connect("127.0.0.1", args.port)
    sock = client.socket()
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client.loop_forever()
    return 0
