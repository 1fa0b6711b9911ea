"""Publish a fleet's message stream to an MQTT broker, paced, with a bounded paho queue.

One paho client per process (its network thread via ``loop_start``). paho keys queued
QoS 1 messages by a 16-bit message id, so its queue is bounded here
(``max_queued_messages``, well below 65,536) and a full queue (``MQTT_ERR_QUEUE_SIZE``)
makes the publisher wait with a growing pause and retry the same message: nothing is
silently replaced. A ``disconnect`` fault drops the connection for a while; samples due
in that window are not sent (counted as dropped), as with a device that lost its link.
"""

from __future__ import annotations

import ssl
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion

from simulators.fleet import FleetSpec, SimDevice
from simulators.generator import FleetGenerator, FleetStats

__all__ = ["BrokerTarget", "publish_fleet"]

MAX_QUEUED = 20_000


@dataclass(frozen=True, slots=True)
class BrokerTarget:
    host: str
    port: int
    protocol: str = "3.1.1"
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None
    qos: int = 1


class _Publisher:
    def __init__(self, target: BrokerTarget, client_id: str) -> None:
        self.target = target
        v5 = target.protocol == "5"
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
        )
        self.client.max_queued_messages_set(MAX_QUEUED)
        self.client.max_inflight_messages_set(1000)
        if target.username is not None:
            self.client.username_pw_set(target.username, target.password)
        if target.ca_file is not None:
            self.client.tls_set_context(ssl.create_default_context(cafile=target.ca_file))
        self.connected = threading.Event()
        self.acked = 0
        self.refused: str | None = None
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish

    def _on_connect(self, _c: object, _u: object, _f: object, code: object, _p: object) -> None:
        if getattr(code, "is_failure", False):
            self.refused = str(code)
        else:
            self.connected.set()

    def _on_disconnect(self, *_args: object) -> None:
        self.connected.clear()

    def _on_publish(self, *_args: object) -> None:
        self.acked += 1

    def connect(self, timeout: float = 15.0) -> None:
        self.client.connect(self.target.host, self.target.port, keepalive=30)
        self.client.loop_start()
        if not self.connected.wait(timeout):
            self.client.loop_stop()
            reason = self.refused or f"no CONNACK within {timeout:.0f} s"
            raise ConnectionError(f"broker {self.target.host}:{self.target.port} refused: {reason}")

    def reconnect(self) -> None:
        self.client.reconnect()
        self.connected.wait(15.0)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class _Outage:
    """The ``disconnect`` fault: when the link is down, and whether to drop a sample."""

    def __init__(self, every: float, duration: float) -> None:
        self.every = every
        self.duration = duration
        self.next_down = every if every > 0 else float("inf")
        self.up_at = 0.0

    def step(self, pub: _Publisher, due: float, stats: FleetStats) -> bool:
        """True when the sample due at ``due`` falls in an outage (and is dropped)."""
        if due >= self.next_down:
            pub.client.disconnect()
            stats.disconnects += 1
            self.up_at = due + self.duration
            self.next_down += self.every
        if not self.up_at:
            return False
        if due < self.up_at:
            return True
        pub.reconnect()
        self.up_at = 0.0
        return False


def _publish(client: mqtt.Client, topic: str, payload: bytes, qos: int, stats: FleetStats) -> None:
    """Publish, waiting (with a growing pause) while paho's bounded queue is full."""
    pause = 0.001
    while client.publish(topic, payload, qos=qos).rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
        stats.queue_full_waits += 1
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


def _unsend(stats: FleetStats, readings: int) -> None:
    stats.messages -= 1
    stats.readings -= readings


def publish_fleet(
    spec: FleetSpec,
    target: BrokerTarget,
    *,
    devices: Sequence[SimDevice] | None = None,
    rate: float | None = None,
    duration: float | None = None,
    max_messages: int | None = None,
    client_id: str | None = None,
    stop: threading.Event | None = None,
    progress: Callable[[FleetStats], None] | None = None,
    drain_timeout: float = 30.0,
) -> FleetStats:
    """Publish until ``duration`` seconds passed or ``max_messages`` were sent.

    ``rate=0`` (or ``inf``) publishes as fast as the broker takes it. Returns what was
    sent, with ``acked`` = PUBACKs received (QoS 1) by the end of the drain.
    """
    devices = [d for d in (devices if devices is not None else spec.devices()) if not d.is_serial]
    if not devices:
        return FleetStats()
    unpaced = rate is not None and (rate <= 0 or rate == float("inf"))
    generator = FleetGenerator(spec, devices, rate=None if unpaced or rate is None else rate)
    stats = generator.stats
    pub = _Publisher(target, client_id or f"edgegw-sim-{uuid.uuid4().hex[:8]}")
    pub.connect()
    outage = _Outage(spec.faults.disconnect.every, spec.faults.disconnect.duration)
    limit = float("inf") if duration is None else duration
    began = time.monotonic()
    last_progress = began
    try:
        for due, out in generator.messages():
            now = time.monotonic() - began
            if (
                (stop is not None and stop.is_set())
                or now >= limit
                or (due >= limit and not unpaced)
                or (max_messages is not None and stats.messages > max_messages)
            ):
                _unsend(stats, len(out.readings))  # generated, never sent
                break
            if not unpaced and due > now:
                time.sleep(due - now)
            if outage.step(pub, due, stats):
                stats.dropped += 1
                _unsend(stats, len(out.readings))
                continue
            _publish(pub.client, out.topic, out.payload, target.qos, stats)
            if progress is not None and time.monotonic() - last_progress >= 0.5:
                last_progress = time.monotonic()
                stats.acked = pub.acked
                stats.elapsed = last_progress - began
                progress(stats)
        # let the in-flight messages reach the broker
        deadline = time.monotonic() + drain_timeout
        while target.qos and pub.acked < stats.messages and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stats.acked = pub.acked
        stats.elapsed = time.monotonic() - began
        pub.close()
    return stats
