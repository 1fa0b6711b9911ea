"""Fleet specs: which simulated devices exist, how they talk, how fast, which faults.

A fleet file (YAML)::

    seed: 42                  # same seed, same run
    rate: 200                 # total readings per second (the CLI's --rate wins)
    groups:
      - {kind: temperature, count: 6, profile: zigbee2mqtt, prefix: temp}
      - {kind: power, count: 2, profile: tasmota}
      - {kind: motion, count: 3, profile: json}
      - {kind: door, count: 2, profile: plain}
    serial:
      - {kind: co2, count: 1, format: kv, path: /tmp/edgegw-sim/co2-serial}
    faults:
      dropout: {probability: 0.001, duration: 20s}
      garbage: 0.002          # probability per message
      spike: 0.001
      disconnect: {every: 2m, duration: 5s}

Device ids are ``<prefix>-<n>`` (prefix defaults to the kind), numbered from 1 within a
group. :meth:`FleetSpec.devices` expands the groups; :meth:`FleetSpec.gateway_devices`
gives the matching ``devices:`` section for an edgegw config (plain data).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from devices.config import parse_duration

__all__ = ["KINDS", "Disconnect", "Dropout", "Faults", "FleetSpec", "Group", "SerialGroup", "SimDevice"]

Kind = Literal["temperature", "humidity", "motion", "door", "power", "co2"]
KINDS: tuple[str, ...] = ("temperature", "humidity", "motion", "door", "power", "co2")
Profile = Literal["json", "plain", "zigbee2mqtt", "tasmota"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Group(_Model):
    kind: Kind
    count: int = Field(default=1, ge=1, le=100_000)
    profile: Profile = "zigbee2mqtt"
    prefix: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]+$")


class SerialGroup(_Model):
    kind: Kind
    count: int = Field(default=1, ge=1, le=64)
    format: Literal["kv", "json"] = "kv"
    prefix: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]+$")
    path: str | None = None
    """Symlink to the pty (``-<n>`` appended when count > 1); default /tmp/edgegw-sim/<id>."""


class Dropout(_Model):
    probability: float = Field(default=0.0, ge=0, le=1)
    """Chance per message that its device goes silent."""
    duration: float = 10.0

    @field_validator("duration", mode="before")
    @classmethod
    def _d(cls, value: object) -> float:
        return parse_duration(value)


class Disconnect(_Model):
    every: float = 0.0
    """Drop the broker connection (or unplug the pty) this often; 0 = never."""
    duration: float = 2.0

    @field_validator("every", "duration", mode="before")
    @classmethod
    def _d(cls, value: object) -> float:
        return parse_duration(value)


class Faults(_Model):
    dropout: Dropout = Dropout()
    garbage: float = Field(default=0.0, ge=0, le=1)
    """Chance per message that the payload is replaced by random bytes."""
    spike: float = Field(default=0.0, ge=0, le=1)
    """Chance per message that a numeric value jumps far out of its normal range."""
    disconnect: Disconnect = Disconnect()

    @property
    def any(self) -> bool:
        return bool(self.dropout.probability or self.garbage or self.spike or self.disconnect.every)


@dataclass(frozen=True, slots=True)
class SimDevice:
    id: str
    kind: str
    profile: str  # json | plain | zigbee2mqtt | tasmota | kv (serial) | json-lines (serial)
    serial_path: str | None = None

    @property
    def is_serial(self) -> bool:
        return self.serial_path is not None


class FleetSpec(_Model):
    seed: int = 0
    rate: float = Field(default=100.0, gt=0)
    groups: list[Group] = Field(default_factory=list)
    serial: list[SerialGroup] = Field(default_factory=list)
    faults: Faults = Faults()

    @model_validator(mode="after")
    def _unique(self) -> FleetSpec:
        ids = [d.id for d in self.devices()]
        seen: set[str] = set()
        for dev in ids:
            if dev in seen:
                raise ValueError(f"device id {dev} appears twice: give the groups distinct prefixes")
            seen.add(dev)
        if not ids:
            raise ValueError("a fleet needs at least one device group")
        return self

    @classmethod
    def load(cls, path: str | Path) -> FleetSpec:
        from ruamel.yaml import YAML  # noqa: PLC0415 - only the CLI reads files

        data = YAML(typ="safe").load(Path(path).read_text())
        return cls.model_validate(data)

    def devices(self) -> list[SimDevice]:
        out: list[SimDevice] = []
        for group in self.groups:
            prefix = group.prefix or group.kind
            width = max(2, len(str(group.count)))
            out += [SimDevice(f"{prefix}-{i:0{width}d}", group.kind, group.profile)
                    for i in range(1, group.count + 1)]
        for sgroup in self.serial:
            prefix = sgroup.prefix or f"{sgroup.kind}-serial"
            for i in range(1, sgroup.count + 1):
                dev_id = f"{prefix}-{i:02d}"
                if sgroup.path is None:
                    path = f"/tmp/edgegw-sim/{dev_id}"  # noqa: S108 - a symlink the user can override
                else:
                    path = sgroup.path if sgroup.count == 1 else f"{sgroup.path}-{i}"
                profile = "kv" if sgroup.format == "kv" else "json-lines"
                out.append(SimDevice(dev_id, sgroup.kind, profile, path))
        return out

    def gateway_devices(self) -> list[dict[str, Any]]:
        """The ``devices:`` entries an edgegw config needs to read this fleet."""
        from simulators.encoders import device_config  # noqa: PLC0415 - avoids an import cycle

        return [device_config(dev) for dev in self.devices()]
