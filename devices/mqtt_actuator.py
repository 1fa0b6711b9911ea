"""The MQTT side of the actuators: publish commands, watch state topics for read-back.

Its own connection (client id ``<client_id>-cmd``, clean session: a command that could
not be sent while the broker was away is reported as failed, never replayed later).
paho's outgoing queue is bounded (``max_queued_messages``, so its 16-bit message ids never
wrap). When it is full (the broker is slow to PUBACK), commands wait in a small backlog,
in order, and go out as paho's queue drains: back-pressure that never blocks the rule
path. A full backlog, or a lost connection, fails the command (counted and logged).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.enums import MQTTErrorCode
from pydantic import SecretStr

from devices.actuators import Actuators
from devices.config import MqttConnection
from devices.mqtt_client import InMessage, MqttLink
from gateway.errors import ActuatorError

__all__ = ["MqttCommandLink"]

BACKLOG_MAX = 1000
DRAIN_INTERVAL = 0.01
_log = structlog.get_logger("edgegw.devices.actuators")


class MqttCommandLink:
    """Implements :class:`devices.actuators.Publisher` over one MQTT connection."""

    def __init__(
        self,
        conn: MqttConnection,
        actuators: Actuators,
        *,
        password: SecretStr | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] | None = None,
    ) -> None:
        self.actuators = actuators
        self._mono = monotonic
        self.link = MqttLink(
            conn,
            password=password,
            client_id=f"{conn.client_id}-cmd"[:64],
            persistent=False,
            on_connected=self._subscribe,
            on_messages=self._on_messages,
            name="mqtt-actuators",
            rand=rand,
        )
        actuators.set_publisher(self)
        self._backlog: deque[tuple[str, bytes, int]] = deque()
        self._drain: asyncio.TimerHandle | None = None
        self.backlog_waits = 0
        self.dropped = 0

    async def run(self) -> None:
        await self.link.run()

    def stop(self) -> None:
        self.link.stop()

    def _subscribe(self, _session_present: bool) -> None:
        if self._backlog:  # commands held back on the lost connection: too late now
            self.dropped += len(self._backlog)
            _log.warning("commands dropped with the lost connection", count=len(self._backlog))
            self._backlog.clear()
        topics = self.actuators.state_topics
        if topics:
            self.link.client.subscribe([(t, 0) for t in topics])

    def _on_messages(self, messages: list[InMessage]) -> None:
        now = self._mono()
        for message in messages:
            if message.topic is not None:
                self.actuators.on_state(message.topic, message.payload, now)

    def publish(self, topic: str, payload: bytes, qos: int) -> None:
        if not self.link.connected:
            raise ActuatorError(f"MQTT broker {self.link.conn.host} not connected")
        if self._backlog:
            if len(self._backlog) >= BACKLOG_MAX:
                raise ActuatorError("MQTT command backlog full (the broker does not acknowledge)")
            self._backlog.append((topic, payload, qos))
            return
        if not self._send(topic, payload, qos):
            self._backlog.append((topic, payload, qos))
            self._schedule_drain()

    def _send(self, topic: str, payload: bytes, qos: int) -> bool:
        """Hand one message to paho; False when its queue is full."""
        info = self.link.client.publish(topic, payload, qos=qos)
        if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
            self.backlog_waits += 1
            return False
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            raise ActuatorError(f"publish to {topic} failed: {mqtt.error_string(info.rc)}")
        self.link.after_io()
        return True

    def _schedule_drain(self) -> None:
        loop = self.link._loop
        if loop is not None and self._drain is None:
            self._drain = loop.call_later(DRAIN_INTERVAL, self._drain_backlog)

    def _drain_backlog(self) -> None:
        self._drain = None
        while self._backlog and self.link.connected:
            topic, payload, qos = self._backlog[0]
            try:
                sent = self._send(topic, payload, qos)
            except ActuatorError as exc:
                self._backlog.popleft()
                self.dropped += 1
                _log.warning("command failed", topic=topic, error=str(exc))
                continue
            if not sent:
                break
            self._backlog.popleft()
        if self._backlog:
            self._schedule_drain()

    @property
    def backlog(self) -> int:
        return len(self._backlog)

