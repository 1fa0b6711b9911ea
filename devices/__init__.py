"""Device adapters: MQTT and serial sources that yield readings, actuators that apply commands.

The runtime (``gateway/``) wires these together; this package imports nothing of the
project but :mod:`gateway.model`, :mod:`gateway.errors` and the leaves in :mod:`common`.
See docs/devices.md.

- Sources hand each wakeup's readings to a :class:`BatchSink` as one
  :class:`SourceBatch` (readings, the MQTT message behind each, poison input); the sink
  settles it ``durable()`` once committed (the MQTT source then sends the PUBACKs, QoS 1,
  persistent session) or ``void()`` (the broker redelivers). See devices/sink.py.
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
from devices.sink import BatchSink, BatchState, Poison, SourceBatch

__all__ = [
    "UNKNOWN_DEVICE",
    "ActuatorConfig",
    "Actuators",
    "BadInputCounter",
    "BatchSink",
    "BatchState",
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
    "Poison",
    "Publisher",
    "SerialIngest",
    "SerialLineWriter",
    "SerialPort",
    "SerialPortConfig",
    "SerialSource",
    "SourceBatch",
    "TlsSettings",
    "TopicRouter",
    "build_decoder",
    "encode_command",
    "open_serial",
]
