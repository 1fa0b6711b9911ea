"""The MQTT side of the actuators: publish commands, watch state topics for read-back.

Its own connection (client id ``<client_id>-cmd``, clean session: a command that could
not be sent while the broker was away is reported as failed, never replayed later).
paho's outgoing queue is bounded (``max_queued_messages``); when it is full, publishing
raises :class:`ActuatorError` instead of letting paho's 16-bit message ids wrap.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from pydantic import SecretStr

from devices.actuators import Actuators
from devices.config import MqttConnection
from devices.mqtt_client import InMessage, MqttLink
from gateway.errors import ActuatorError

__all__ = ["MqttCommandLink"]


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

    async def run(self) -> None:
        await self.link.run()

    def stop(self) -> None:
        self.link.stop()

    def _subscribe(self, _session_present: bool) -> None:
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
        info = self.link.client.publish(topic, payload, qos=qos)
        if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
            raise ActuatorError("MQTT outgoing queue full (broker slow or away)")
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            raise ActuatorError(f"publish to {topic} failed: {mqtt.error_string(info.rc)}")
        self.link.after_io()

