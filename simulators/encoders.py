"""How simulated devices put their samples on the wire, per profile.

Written independently of ``devices/profiles.py`` on purpose: the tests check that the
gateway reads what real devices of each kind would send. Every message carries the
readings the gateway should get from it (``Outgoing.readings``), so a test or a summary
can compare what was sent with what arrived.

- ``zigbee2mqtt``: ``zigbee2mqtt/<id>``, ``{"temperature": 21.37, "linkquality": 96}``
  (``linkquality`` is left out of the gateway's fields, as users often do);
- ``tasmota``: ``tele/<id>/SENSOR``, ``{"Time": ..., "DS18B20": {"Temperature": 21.4},
  "TempUnit": "C"}``; motion and doors as ``Switch1``/``Switch2`` ``ON``/``OFF``;
- ``json``: ``sensors/<id>/state``, ``{"ts": 1700000000.123, "temperature": 21.37}``;
- ``plain``: ``sensors/<id>/<metric>``, ``21.37`` / ``true``;
- serial ``kv``: ``temperature=21.37`` lines; serial ``json-lines``: ``{"temperature":21.37}``.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from typing import Any

from simulators.fleet import SimDevice
from simulators.signals import Sample

__all__ = ["KIND_METRICS", "Outgoing", "device_config", "encode", "garbage"]

KIND_METRICS: dict[str, tuple[str, ...]] = {
    "temperature": ("temperature",),
    "humidity": ("humidity",),
    "motion": ("occupancy",),
    "door": ("contact",),
    "power": ("power", "energy"),
    "co2": ("co2",),
}
# metric -> (Tasmota sensor, field); None field = a top-level ON/OFF switch
_TASMOTA: dict[str, tuple[str, str | None]] = {
    "temperature": ("DS18B20", "Temperature"),
    "humidity": ("AM2301", "Humidity"),
    "occupancy": ("Switch1", None),
    "contact": ("Switch2", None),
    "power": ("ENERGY", "Power"),
    "energy": ("ENERGY", "Total"),
    "co2": ("MHZ19B", "CarbonDioxide"),
}
_UNITS = {"temperature": "°C", "humidity": "%", "power": "W", "energy": "kWh", "co2": "ppm"}


@dataclass(slots=True)
class Outgoing:
    device_id: str
    topic: str  # "" for serial lines
    payload: bytes
    readings: list[tuple[str, float | bool | str]] = field(default_factory=list)
    """(metric, value) the gateway should read from it; empty for garbage."""
    ts: float | None = None
    """The source time in the payload, when the profile carries one."""


def _plain(value: float | bool) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else repr(value)


def encode(dev: SimDevice, sample: Sample, t: float) -> list[Outgoing]:
    """The messages one sample of ``dev`` becomes (one, or one per metric for plain)."""
    profile = dev.profile
    if profile == "zigbee2mqtt":
        body: dict[str, Any] = dict(sample)
        body["linkquality"] = 96
        return [Outgoing(dev.id, f"zigbee2mqtt/{dev.id}", _dumps(body), list(sample.items()))]
    if profile == "tasmota":
        tas: dict[str, Any] = {"Time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t))}
        readings: list[tuple[str, float | bool | str]] = []
        for metric, value in sample.items():
            sensor, fld = _TASMOTA[metric]
            if fld is None:
                tas[sensor] = "ON" if value else "OFF"
                readings.append((metric, tas[sensor]))
            else:
                tas.setdefault(sensor, {})[fld] = value
                readings.append((metric, value))
        if "temperature" in sample:
            tas["TempUnit"] = "C"
        return [Outgoing(dev.id, f"tele/{dev.id}/SENSOR", _dumps(tas), readings)]
    if profile == "json":
        ts = round(t, 3)
        return [Outgoing(dev.id, f"sensors/{dev.id}/state", _dumps({"ts": ts, **sample}),
                         list(sample.items()), ts)]
    if profile == "plain":
        return [Outgoing(dev.id, f"sensors/{dev.id}/{m}", _plain(v).encode(), [(m, v)])
                for m, v in sample.items()]
    if profile == "kv":
        line = ",".join(f"{m}={_plain(v)}" for m, v in sample.items())
        return [Outgoing(dev.id, "", line.encode() + b"\n", list(sample.items()))]
    # json-lines
    return [Outgoing(dev.id, "", _dumps(dict(sample)) + b"\n", list(sample.items()))]


def _dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def garbage(dev: SimDevice, rng: random.Random) -> Outgoing:
    """A message no profile accepts: it starts with a byte that is never UTF-8 (0xFF)."""
    size = rng.randint(1, 48)
    body = b"\xff" + bytes(rng.choice(b"\x00\x01\x7f\x80\xfeabc{}[]=,:0123456789") for _ in range(size))
    topic = {"zigbee2mqtt": f"zigbee2mqtt/{dev.id}", "tasmota": f"tele/{dev.id}/SENSOR",
             "json": f"sensors/{dev.id}/state", "plain": f"sensors/{dev.id}/{KIND_METRICS[dev.kind][0]}"}
    if dev.is_serial:
        return Outgoing(dev.id, "", body + b"\n")
    return Outgoing(dev.id, topic[dev.profile], body)


def device_config(dev: SimDevice) -> dict[str, Any]:
    """The edgegw ``devices:`` entry that reads ``dev`` (metrics named as in the readings)."""
    metrics = KIND_METRICS[dev.kind]
    if dev.is_serial:
        return {"id": dev.id, "transport": "serial", "profile": "kv" if dev.profile == "kv" else "json",
                "serial": {"port": dev.serial_path, "baud": 115200}}
    if dev.profile == "zigbee2mqtt":
        return {"id": dev.id, "topic": f"zigbee2mqtt/{dev.id}", "profile": "zigbee2mqtt",
                "fields": {m: {"metric": m, "unit": _UNITS.get(m)} for m in metrics}}
    if dev.profile == "tasmota":
        fields = {}
        for m in metrics:
            sensor, fld = _TASMOTA[m]
            fields[sensor if fld is None else f"{sensor}.{fld}"] = {"metric": m, "unit": _UNITS.get(m)}
        return {"id": dev.id, "topic": f"tele/{dev.id}/SENSOR", "profile": "tasmota", "fields": fields}
    if dev.profile == "json":
        return {"id": dev.id, "topic": f"sensors/{dev.id}/state", "profile": "json",
                "fields": {m: {"metric": m, "unit": _UNITS.get(m)} for m in metrics},
                "timestamp_field": "ts"}
    return {"id": dev.id, "topic": f"sensors/{dev.id}/+", "profile": "plain"}
