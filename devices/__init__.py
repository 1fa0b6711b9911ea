"""Device adapters: MQTT and serial sources that yield readings, actuators that apply commands.

The runtime (``gateway/``) wires these together; this package imports nothing of the
project but :mod:`gateway.model`, :mod:`gateway.errors` and the leaves in :mod:`common`.
See docs/devices.md.

- Sources hand batches of readings to a :class:`ReadingSink` with an :class:`Ack`
  handle: ``sink(readings, ack)``; call ``ack()`` once the batch is durable and the MQTT
  source sends the PUBACKs (QoS 1, persistent session).
- :class:`Actuators` holds the declared actuators; :class:`MqttCommandLink` and
  :class:`SerialLineWriter` deliver their commands.
- :class:`HealthTracker` (online/offline) and :class:`BadInputCounter` (bad input per
  device and reason) are pure and take the time as an argument.
"""

from __future__ import annotations

from devices.actuators import Actuators, LineWriter, Publisher, encode_command
from devices.config import (
    ActuatorConfig,
    ConfirmConfig,
    DeviceConfig,
    FieldSpec,
    MqttConnection,
    PasswordRef,
    SerialPortConfig,
    TlsSettings,
)
from devices.errors_counter import UNKNOWN_DEVICE, BadInputCounter
from devices.framing import Frame, LineFramer
from devices.health import DeviceState, HealthChange, HealthTracker
from devices.mqtt_actuator import MqttCommandLink
from devices.mqtt_client import InMessage, MqttLink
from devices.mqtt_source import MqttSource, TopicRouter
from devices.profiles import Decoder, build_decoder
from devices.serial_source import SerialIngest, SerialLineWriter, SerialPort, SerialSource, open_serial
from devices.sink import Ack, ReadingSink

__all__ = [
    "UNKNOWN_DEVICE",
    "Ack",
    "ActuatorConfig",
    "Actuators",
    "BadInputCounter",
    "ConfirmConfig",
    "Decoder",
    "DeviceConfig",
    "DeviceState",
    "FieldSpec",
    "Frame",
    "HealthChange",
    "HealthTracker",
    "InMessage",
    "LineFramer",
    "LineWriter",
    "MqttCommandLink",
    "MqttConnection",
    "MqttLink",
    "MqttSource",
    "PasswordRef",
    "Publisher",
    "ReadingSink",
    "SerialIngest",
    "SerialLineWriter",
    "SerialPort",
    "SerialPortConfig",
    "SerialSource",
    "TlsSettings",
    "TopicRouter",
    "build_decoder",
    "encode_command",
    "open_serial",
]
