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

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

# Exported name -> (its module, its name there), imported on first use (PEP 562): `from devices.config import
# DeviceConfig` (what the config models need) loads neither paho nor the serial source,
# and a process loads only the adapters it uses.
_EXPORTS: dict[str, tuple[str, str]] = {
    "Actuators": ("devices.actuators", "Actuators"),
    "LineWriter": ("devices.actuators", "LineWriter"),
    "Publisher": ("devices.actuators", "Publisher"),
    "encode_command": ("devices.actuators", "encode_command"),
    "ActuatorConfig": ("devices.config", "ActuatorConfig"),
    "ConfirmConfig": ("devices.config", "ConfirmConfig"),
    "DeviceConfig": ("devices.config", "DeviceConfig"),
    "FieldSpec": ("devices.config", "FieldSpec"),
    "MqttConnection": ("devices.config", "MqttConnection"),
    "PasswordRef": ("devices.config", "PasswordRef"),
    "SerialPortConfig": ("devices.config", "SerialPortConfig"),
    "TlsSettings": ("devices.config", "TlsSettings"),
    "UNKNOWN_DEVICE": ("devices.errors_counter", "UNKNOWN_DEVICE"),
    "BadInputCounter": ("devices.errors_counter", "BadInputCounter"),
    "Frame": ("devices.framing", "Frame"),
    "LineFramer": ("devices.framing", "LineFramer"),
    "DeviceState": ("devices.health", "DeviceState"),
    "HealthChange": ("devices.health", "HealthChange"),
    "HealthTracker": ("devices.health", "HealthTracker"),
    "MqttCommandLink": ("devices.mqtt_actuator", "MqttCommandLink"),
    "InMessage": ("devices.mqtt_client", "InMessage"),
    "MqttLink": ("devices.mqtt_client", "MqttLink"),
    "MqttSource": ("devices.mqtt_source", "MqttSource"),
    "TopicRouter": ("devices.mqtt_source", "TopicRouter"),
    "Decoder": ("devices.profiles", "Decoder"),
    "build_decoder": ("devices.profiles", "build_decoder"),
    "SerialIngest": ("devices.serial_source", "SerialIngest"),
    "SerialLineWriter": ("devices.serial_source", "SerialLineWriter"),
    "SerialPort": ("devices.serial_source", "SerialPort"),
    "SerialSource": ("devices.serial_source", "SerialSource"),
    "open_serial": ("devices.serial_source", "open_serial"),
    "BatchSink": ("devices.sink", "BatchSink"),
    "BatchState": ("devices.sink", "BatchState"),
    "Poison": ("devices.sink", "Poison"),
    "SourceBatch": ("devices.sink", "SourceBatch"),
}


def __getattr__(name: str) -> Any:
    where = _EXPORTS.get(name)
    if where is None:
        raise AttributeError(f"module 'devices' has no attribute {name!r}")
    value = getattr(import_module(where[0]), where[1])
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


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
