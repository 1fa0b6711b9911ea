"""The ``homeassistant:`` config section, modelled on Zigbee2MQTT's ``homeassistant`` settings.

::

    homeassistant:
      enabled: true                         # off by default
      discovery_topic: homeassistant        # Home Assistant's discovery prefix
      status_topic: homeassistant/status    # its birth/last-will topic: `online` republishes
      base_topic: edgegw/hall-pi            # states, availability, commands (default edgegw/<gateway id>)
      include_zigbee2mqtt: false            # Zigbee2MQTT announces its devices itself
      actuators:                            # optional, per declared actuator
        living-room/thermostat: {platform: climate, on_value: heat, off_value: idle}
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["HaActuator", "HomeAssistantSection"]

_TOPIC = re.compile(r"^[^#+\x00]+$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _topic(value: str) -> str:
    if not _TOPIC.fullmatch(value) or value.startswith("/") or value.endswith("/"):
        raise ValueError(f"{value!r}: a topic without wildcards (+, #) and without a leading or trailing '/'")
    return value


class HaActuator(_Model):
    """How one declared actuator shows up in Home Assistant (all optional)."""

    platform: Literal["switch", "light", "climate"] | None = None
    """Default: ``light`` when a rule sets ``brightness``, ``climate`` when one sets
    ``target`` (or ``temperature``), ``switch`` otherwise."""
    name: str | None = Field(default=None, min_length=1)
    state_key: str = Field(default="state", min_length=1)
    """The payload key that switches it on and off."""
    on_value: str | None = None
    """What ``state_key`` is set to for on. Default: the value the rules' ``then`` set, else ``ON``."""
    off_value: str | None = None
    """For off. Default: the value the rules' ``else`` or ``revert`` set, else ``OFF``."""
    target_key: str = Field(default="target", min_length=1)
    """climate: the payload key of the target temperature."""
    min_temp: float = 5.0
    max_temp: float = 35.0

    @model_validator(mode="after")
    def _range(self) -> HaActuator:
        if self.min_temp >= self.max_temp:
            raise ValueError("min_temp must be below max_temp")
        return self


class HomeAssistantSection(_Model):
    enabled: bool = False
    discovery_topic: str = "homeassistant"
    status_topic: str = "homeassistant/status"
    base_topic: str | None = None
    """Where edgegw publishes states and availability and listens for commands
    (default ``edgegw/<gateway id>``)."""
    include_zigbee2mqtt: bool = False
    """Announce devices and actuators of profile ``zigbee2mqtt`` too (Zigbee2MQTT's own
    discovery already does: both would show up twice)."""
    actuators: dict[str, HaActuator] = Field(default_factory=dict)

    @field_validator("discovery_topic", "status_topic", "base_topic")
    @classmethod
    def _topics(cls, value: str | None) -> str | None:
        return value if value is None else _topic(value)
