"""Config models for the device side: the MQTT connection, devices and actuators.

Validated once at load time (pydantic, ``extra="forbid"``, frozen); the hot path then
works on the plain slotted objects that :mod:`devices.profiles` builds from them.

Secrets never sit in the YAML: ``password`` names where to read the password from (a
file, an environment variable or a systemd credential), and the gateway resolves it
(``gateway.secrets``) before it hands the value to a source or an actuator.

Example::

    mqtt:
      host: broker.local
      port: 8883
      protocol: "5"
      client_id: edgegw-hall
      username: edgegw
      password: {credential: mqtt-password}
      tls: {ca_file: /etc/edgegw/ca.pem}
    devices:
      - id: living-room
        topic: zigbee2mqtt/living-room
        profile: zigbee2mqtt
        stale_after: 10m
      - id: boiler
        transport: serial
        serial: {port: /dev/serial/by-id/usb-FTDI_FT232R-if00-port0, baud: 115200}
        profile: kv
    actuators:
      - id: living-room/ac
        profile: zigbee2mqtt
        name: living-room-ac
        confirm: {timeout: 5s}
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from common.configtypes import Duration, SecretRef, parse_duration

__all__ = [
    "ActuatorConfig",
    "ConfirmConfig",
    "DeviceConfig",
    "FieldSpec",
    "MqttConnection",
    "PasswordRef",
    "ProfileName",
    "SerialPortConfig",
    "TlsSettings",
    "parse_duration",
]

ProfileName = Literal["json", "plain", "zigbee2mqtt", "tasmota", "kv"]
"""Payload profiles: generic JSON, plain value, Zigbee2MQTT state, Tasmota SENSOR, key=value lines."""

_ID = re.compile(r"^[A-Za-z0-9_-]+$")
_ACTUATOR_ID = re.compile(r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)?$")
def _size(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+)\s*(B|KiB|MiB|KB|MB)?\s*", value)
        if match:
            factor = {"B": 1, None: 1, "KiB": 1024, "MiB": 1024 * 1024, "KB": 1000, "MB": 1_000_000}
            return int(match.group(1)) * factor[match.group(2)]
    raise ValueError(f"invalid size {value!r}: write bytes or e.g. 64KiB")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


PasswordRef = SecretRef
"""Where a password comes from (see :class:`common.configtypes.SecretRef`)."""


class TlsSettings(_Model):
    ca_file: Path | None = None
    """CA bundle that signed the broker's certificate; the system store when omitted."""
    cert_file: Path | None = None
    key_file: Path | None = None

    @model_validator(mode="after")
    def _pair(self) -> TlsSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (client certificate)")
        return self


class MqttConnection(_Model):
    """One MQTT broker connection (the sources and the actuators each open their own)."""

    host: str = "127.0.0.1"
    port: int | None = Field(default=None, ge=1, le=65535)
    """1883, or 8883 with TLS, when omitted."""
    protocol: Literal["3.1.1", "5"] = "3.1.1"
    client_id: str = Field(default="edgegw", min_length=1, max_length=64)
    keepalive: Duration = 30.0
    session_expiry: Duration = 7 * 24 * 3600.0
    """MQTT 5: how long the broker keeps the session (and queued QoS 1 messages) while
    edgegw is away. On 3.1.1 the broker's ``persistent_client_expiration`` decides."""
    receive_maximum: int = Field(default=1000, ge=1, le=65535)
    """MQTT 5: unacknowledged QoS 1 messages the broker may send at once."""
    max_queued_messages: int = Field(default=1000, ge=1, le=60000)
    """Outgoing QoS 1 messages paho may hold (bounded: paho keys them by 16-bit id)."""
    command_hold_max: int = Field(default=1000, ge=1, le=100_000)
    """Commands held while the actuators' link is down (or paho's queue is full), sent in
    order once it is back; beyond this many the oldest are dropped (counted and logged)."""
    command_hold_max_age: Duration = Field(default=30.0, gt=0)
    """A held command older than this when it could leave is dropped, not sent late."""
    username: str | None = None
    password: PasswordRef | None = None
    tls: TlsSettings | None = None
    reconnect_min: Duration = 0.5
    reconnect_max: Duration = 60.0
    connect_timeout: Duration = 10.0


    @model_validator(mode="after")
    def _check(self) -> MqttConnection:
        if self.password is not None and self.username is None:
            raise ValueError("password needs a username")
        if self.reconnect_min > self.reconnect_max:
            raise ValueError("reconnect_min must not exceed reconnect_max")
        return self

    @property
    def effective_port(self) -> int:
        return self.port or (8883 if self.tls is not None else 1883)


class SerialPortConfig(_Model):
    port: str = Field(min_length=1)
    """Use the stable ``/dev/serial/by-id/...`` name, not ``/dev/ttyUSB0`` (see docs/devices.md)."""
    baud: int = Field(default=9600, gt=0)
    max_line: int = Field(default=4096, ge=16)
    """Longest accepted line in bytes; longer lines are counted and skipped."""
    reconnect_min: Duration = 0.5
    reconnect_max: Duration = 30.0



class FieldSpec(_Model):
    metric: str = Field(min_length=1)
    unit: str | None = None
    type: Literal["number", "bool", "string", "any"] = "any"


def _field_map(value: object) -> object:
    """``{temp: temperature}`` is short for ``{temp: {metric: temperature}}``."""
    if isinstance(value, dict):
        return {k: ({"metric": v} if isinstance(v, str) else v) for k, v in value.items()}
    return value


class DeviceConfig(_Model):
    """A sensor device. ``id`` is the ``device`` part of ``device/metric`` in rules."""

    id: str
    transport: Literal["mqtt", "serial"] = "mqtt"
    topic: str | None = None
    """MQTT topic filter (``+`` and ``#`` allowed). Tasmota: ``tele/<topic>/SENSOR``."""
    serial: SerialPortConfig | None = None
    profile: ProfileName = "json"
    fields: dict[str, FieldSpec] = Field(default_factory=dict)
    """Dotted payload paths to metrics: only these become readings (with these names).
    Empty: every top-level scalar becomes a reading named after its key."""
    timestamp_field: str | None = None
    """json: dotted path of the source time (epoch s, epoch ms or ISO 8601)."""
    metric: str | None = None
    """plain: the metric name (default: the last topic level)."""
    unit: str | None = None
    value_type: Literal["auto", "number", "bool", "string"] = "auto"
    """plain: how to read the payload."""
    stale_after: Duration = 300.0
    max_payload: int = Field(default=64 * 1024, ge=1)


    @field_validator("max_payload", mode="before")
    @classmethod
    def _max_payload(cls, value: object) -> int:
        return _size(value)

    @field_validator("fields", mode="before")
    @classmethod
    def _fields(cls, value: object) -> object:
        return _field_map(value)

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not _ID.fullmatch(value):
            raise ValueError("device ids use letters, digits, '-' and '_'")
        return value

    @field_validator("topic")
    @classmethod
    def _topic(cls, value: str | None) -> str | None:
        return value if value is None else _check_filter(value)

    @model_validator(mode="after")
    def _check(self) -> DeviceConfig:
        if self.transport == "mqtt":
            if not self.topic:
                raise ValueError("an MQTT device needs a topic")
            if self.serial is not None:
                raise ValueError("serial settings on an MQTT device")
            if self.profile == "kv":
                raise ValueError("profile kv is for serial devices")
        else:
            if self.serial is None:
                raise ValueError("a serial device needs serial: {port: ..., baud: ...}")
            if self.profile not in ("json", "kv", "zigbee2mqtt"):
                raise ValueError("serial devices use profile json, kv or zigbee2mqtt")
        return self


def _check_filter(topic: str) -> str:
    """A subscription filter: ``+`` a whole level, ``#`` a whole last level."""
    _check_levels(topic)
    levels = topic.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise ValueError(f"invalid topic filter {topic!r}: '#' must be a whole last level (e.g. a/b/#)")
        if "+" in level and level != "+":
            raise ValueError(f"invalid topic filter {topic!r}: '+' must be a whole level (e.g. a/+/c)")
    return topic


def _check_topic(topic: str, what: str, why: str) -> str:
    """A topic edgegw publishes to or compares exactly: no wildcards."""
    _check_levels(topic)
    if "+" in topic or "#" in topic:
        raise ValueError(f"{what} {topic!r} cannot hold the wildcards + or #: {why}")
    return topic


def _check_levels(topic: str) -> None:
    if "\x00" in topic:
        raise ValueError("an MQTT topic cannot hold the NUL character")
    for level in topic.split("/"):
        if level != level.strip():
            raise ValueError(
                f"topic {topic!r} has a space at the start or end of a level: MQTT compares "
                "topics exactly, spaces included (spaces inside a name, as Zigbee2MQTT allows, are fine)"
            )


class ConfirmConfig(_Model):
    """Read-back: the command counts as confirmed when the state topic shows the new state."""

    timeout: Duration = 5.0
    state_topic: str | None = None
    """Default: ``<base>/<name>`` (Zigbee2MQTT), ``stat/<topic>/RESULT`` (Tasmota)."""

    @field_validator("state_topic")
    @classmethod
    def _state_topic(cls, value: str | None) -> str | None:
        return value if value is None else _check_topic(
            value, "the read-back state topic", "the state is looked up by its exact topic"
        )



class ActuatorConfig(_Model):
    """A declared actuator; only these can be commanded."""

    id: str
    transport: Literal["mqtt", "serial"] = "mqtt"
    profile: Literal["zigbee2mqtt", "tasmota", "json", "plain", "line"] = "json"
    name: str | None = None
    """zigbee2mqtt: the friendly name; tasmota: the device topic."""
    base_topic: str = "zigbee2mqtt"
    topic: str | None = None
    """json and plain: the command topic."""
    payload_on: str = "ON"
    """plain: the text sent for ``true`` (a command's one value as a boolean)."""
    payload_off: str = "OFF"
    """plain: the text sent for ``false``."""
    serial: SerialPortConfig | None = None
    qos: Literal[0, 1] = 1
    confirm: ConfirmConfig | None = None

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not _ACTUATOR_ID.fullmatch(value):
            raise ValueError("actuator ids look like device or device/name (letters, digits, - and _)")
        return value

    @field_validator("topic", "name", "base_topic")
    @classmethod
    def _topics(cls, value: str | None, info: ValidationInfo) -> str | None:
        return value if value is None else _check_topic(
            value, f"the actuator's {info.field_name}", "commands are published to one exact topic"
        )

    @model_validator(mode="after")
    def _check(self) -> ActuatorConfig:
        if self.transport == "serial":
            if self.serial is None or self.profile not in ("line", "json"):
                raise ValueError("a serial actuator needs serial: {...} and profile line or json")
            if self.confirm is not None:
                raise ValueError("read-back (confirm) needs an MQTT state topic")
            return self
        if self.profile in ("json", "plain") and self.confirm is not None and not self.confirm.state_topic:
            raise ValueError(f"confirm on a {self.profile} actuator needs confirm.state_topic")
        if self.profile in ("zigbee2mqtt", "tasmota") and not self.name:
            raise ValueError(f"profile {self.profile} needs name (the device's name or topic)")
        if self.profile in ("json", "plain") and not self.topic:
            raise ValueError(f"profile {self.profile} needs topic")
        if self.profile == "line":
            raise ValueError("profile line is for serial actuators")
        return self


def model_schema() -> dict[str, Any]:  # pragma: no cover - used by schema generation
    return {
        "mqtt": MqttConnection.model_json_schema(),
        "device": DeviceConfig.model_json_schema(),
        "actuator": ActuatorConfig.model_json_schema(),
    }
