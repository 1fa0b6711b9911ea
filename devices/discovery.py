"""Discovery: the retained announcements of Zigbee2MQTT, Tasmota and Home Assistant, as config data.

Pure: :class:`Announcements` collects ``(topic, payload)`` pairs (no MQTT, no files), and
:meth:`Announcements.result` turns them into device and actuator mappings in the shape of
:class:`~devices.config.DeviceConfig` and :class:`~devices.config.ActuatorConfig`, each
with the comments a person should read (where it came from, what was guessed).

- Zigbee2MQTT: ``<base>/bridge/devices``, a JSON list of devices with ``friendly_name``,
  ``ieee_address`` and ``definition.exposes``. Features with the "published" access bit
  (1) become metrics of a device on ``<base>/<friendly_name>``; each ``light``,
  ``switch``, ``climate``, ``cover``, ``lock`` or ``fan`` expose with a settable feature
  (access bit 2) becomes an actuator, with read-back when its state is published.
- Tasmota: ``<prefix>/<mac>/config`` (``dn``/``fn`` names, ``t`` topic, ``ft`` full topic,
  ``tp`` prefixes, ``rl`` relays and lights) and ``<prefix>/<mac>/sensors`` (``sn``, a
  SENSOR sample). The sample's values become metrics of a device on ``tele/<t>/SENSOR``;
  each relay or light becomes an actuator with read-back on ``stat/<t>/RESULT``.
- Home Assistant discovery configs, for the other devices: see :mod:`devices.discovery_ha`.

The Tasmota part is :mod:`devices.discovery_tasmota`, the Home Assistant part
:mod:`devices.discovery_ha`.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from devices.profiles import Z2M_UNITS

__all__ = [
    "Announcements", "Discovered", "Entry", "UniqueIds",
    "device_comments", "json_payload", "make_id", "plain_id",
]  # fmt: skip

Z2M_ACTUATOR_TYPES = ("light", "switch", "climate", "cover", "lock", "fan")
_PUBLISHED, _SETTABLE = 1, 2
_NOT_ID = re.compile(r"[^a-z0-9_]+")


@dataclass
class Entry:
    """One device or actuator: its config mapping and the comments written above it."""

    data: dict[str, Any]
    comments: list[str] = field(default_factory=list)


@dataclass
class Discovered:
    devices: list[Entry] = field(default_factory=list)
    actuators: list[Entry] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """What was seen but left out, and why (printed, and written at the top of the file)."""


def make_id(name: str, fallback: str = "device") -> str:
    """A name as a device id: ``"Living Room/Küche lamp"`` -> ``living-room-kuche-lamp``."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = _NOT_ID.sub("-", ascii_name.lower()).strip("-_")
    return slug or fallback


def plain_id(name: str) -> str:
    """The id a person would expect: lower case, spaces as ``-`` (no comment needed)."""
    return name.strip().lower().replace(" ", "-")


class UniqueIds:
    """Hands out unique ids (``-2``, ``-3``... on a repeat)."""

    def __init__(self, taken: Iterable[str] = ()) -> None:
        self._taken = set(taken)

    def take(self, wanted: str) -> str:
        candidate, n = wanted, 1
        while candidate in self._taken:
            n += 1
            candidate = f"{wanted}-{n}"
        self._taken.add(candidate)
        return candidate


def device_comments(  # noqa: PLR0917 - two call sites, every part differs
    origin: str, dev_id: str, named: str, plain: str, guessed: tuple[str, list[str]], left_out: list[str]
) -> list[str]:
    """The comments above a discovered device: where it came from, what was made up or left out."""
    comments = [origin]
    if dev_id != plain:
        comments.append(f"id made from {named}")
    if guessed[1]:
        comments.append(f"{guessed[0]}: " + ", ".join(guessed[1]))
    if left_out:
        comments.append("left out: " + ", ".join(left_out))
    return comments


def json_payload(payload: bytes | str) -> Any:
    try:
        return json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None


class Announcements:
    """Retained announcements as they arrive: ``add(topic, payload)``, then ``result()``."""

    def __init__(
        self, *, tasmota_prefix: str = "tasmota/discovery", homeassistant_prefix: str = "homeassistant"
    ) -> None:
        self.tasmota_prefix = tasmota_prefix.rstrip("/")
        self.homeassistant_prefix = homeassistant_prefix.rstrip("/")
        self.homeassistant: dict[str, bytes] = {}
        """``<component>/[<node_id>/]<object_id>`` -> a Home Assistant discovery config."""
        self.zigbee2mqtt: dict[str, bytes] = {}
        """Zigbee2MQTT base topic -> the payload of its ``bridge/devices``."""
        self.tasmota_config: dict[str, bytes] = {}
        self.tasmota_sensors: dict[str, bytes] = {}

    def add(self, topic: str, payload: bytes) -> bool:
        """Keep one message; False when it is not an announcement this module reads."""
        if topic.endswith("/bridge/devices"):
            self.zigbee2mqtt[topic.removesuffix("/bridge/devices")] = payload
            return True
        head = self.tasmota_prefix + "/"
        if topic.startswith(head):
            mac, _, kind = topic[len(head):].partition("/")
            if kind == "config":
                self.tasmota_config[mac] = payload
                return True
            if kind == "sensors":
                self.tasmota_sensors[mac] = payload
                return True
        rest = topic.removeprefix(self.homeassistant_prefix + "/").removesuffix("/config")
        if len(topic) - len(rest) == len(self.homeassistant_prefix) + 8 and rest.count("/") in (1, 2):
            self.homeassistant[rest] = payload
            return True
        return False

    def counts(self) -> tuple[int, int, int]:
        """(Zigbee2MQTT devices, Tasmota devices, HA configs) seen so far, for the progress line."""
        z2m = 0
        for payload in self.zigbee2mqtt.values():
            listed = json_payload(payload)
            if isinstance(listed, list):
                z2m += sum(1 for d in listed if isinstance(d, dict) and d.get("type") != "Coordinator")
        return z2m, len(self.tasmota_config), len(self.homeassistant)

    def result(self) -> Discovered:
        """Devices and actuators, with unique ids."""
        # both import this module for its types
        from devices.discovery_ha import homeassistant  # noqa: PLC0415
        from devices.discovery_tasmota import tasmota_device  # noqa: PLC0415

        out = Discovered()
        device_ids, actuator_ids = UniqueIds(), UniqueIds()
        for base in sorted(self.zigbee2mqtt):
            listed = json_payload(self.zigbee2mqtt[base])
            if not isinstance(listed, list):
                out.notes.append(f"{base}/bridge/devices: not a JSON list, skipped")
                continue
            for device in listed:
                if isinstance(device, dict):
                    _zigbee_device(base, device, out, (device_ids, actuator_ids))
        for mac in sorted(self.tasmota_config):
            config = json_payload(self.tasmota_config[mac])
            if not isinstance(config, dict):
                out.notes.append(f"{self.tasmota_prefix}/{mac}/config: not a JSON object, skipped")
                continue
            sensors = json_payload(self.tasmota_sensors.get(mac, b"null"))
            sample = sensors.get("sn") if isinstance(sensors, dict) else None
            tasmota_device(mac, config, sample if isinstance(sample, dict) else {}, out,
                           (device_ids, actuator_ids))  # fmt: skip

        homeassistant(self, out, (device_ids, actuator_ids))
        return out


# ---------------------------------------------------------------------- Zigbee2MQTT
def _flatten(exposes: object) -> list[dict[str, Any]]:
    """Every leaf feature of ``exposes`` (specific types and composites opened up)."""
    out: list[dict[str, Any]] = []
    if not isinstance(exposes, list):
        return out
    for expose in exposes:
        if not isinstance(expose, dict):
            continue
        features = expose.get("features")
        if isinstance(features, list) and expose.get("type") != "composite":
            out += _flatten(features)
        else:
            out.append(expose)
    return out


def _z2m_field(feature: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """A feature as a ``fields`` entry, or None and why it was left out."""
    kind = feature.get("type")
    prop = feature.get("property")
    if not isinstance(prop, str) or not prop:
        return None, None
    if kind in {"composite", "list"}:
        return None, f"{prop} ({kind}: a nested value, not one reading)"
    spec: dict[str, Any] = {"metric": prop}
    if kind == "numeric":
        spec["type"] = "number"
        unit = feature.get("unit")
        if isinstance(unit, str) and unit:
            spec["unit"] = unit
        elif prop in Z2M_UNITS:
            spec["unit"] = Z2M_UNITS[prop]
    elif kind == "binary":
        spec["type"] = "bool" if isinstance(feature.get("value_on"), bool) else "string"
    elif kind in ("enum", "text"):
        spec["type"] = "string"
    else:
        return None, f"{prop} (type {kind!r} unknown)"
    return spec, None


def _describe_settable(feature: dict[str, Any]) -> str:
    prop = str(feature.get("property"))
    kind = feature.get("type")
    if kind == "binary":
        values = [feature.get(k) for k in ("value_on", "value_off", "value_toggle") if k in feature]
        return f"{prop}: {'/'.join(json.dumps(v) if not isinstance(v, str) else v for v in values)}"
    if kind == "enum" and isinstance(feature.get("values"), list):
        return f"{prop}: {'/'.join(str(v) for v in feature['values'])}"
    if kind == "numeric":
        lo, hi, unit = feature.get("value_min"), feature.get("value_max"), feature.get("unit")
        span = f" {lo}..{hi}" if lo is not None and hi is not None else ""
        return f"{prop}:{span}{f' {unit}' if unit else ''}"
    return prop


def _zigbee_skip(name: str, device: dict[str, Any]) -> str | None:
    """Why a listed Zigbee2MQTT device gets no config, or None."""
    if device.get("disabled") is True:
        return "disabled"
    if not isinstance(device.get("definition"), dict):
        return "no definition (unsupported or not interviewed yet)"
    if any(c in name for c in "+#") or any(lvl != lvl.strip() or not lvl for lvl in name.split("/")):
        return "the name cannot be an MQTT topic (a wildcard, an empty level or a space at its ends)"
    return None


def _zigbee_fields(exposes: object) -> tuple[dict[str, dict[str, Any]], list[str], list[str]]:
    """The published features as ``fields``; the units guessed; what was left out."""
    fields: dict[str, dict[str, Any]] = {}
    guessed: list[str] = []
    left_out: list[str] = []
    for feature in _flatten(exposes):
        access = feature.get("access", _PUBLISHED)
        if not isinstance(access, int) or not access & _PUBLISHED or feature.get("category") == "config":
            continue
        spec, why = _z2m_field(feature)
        if spec is None:
            if why:
                left_out.append(why)
            continue
        if "unit" in spec and not feature.get("unit"):
            guessed.append(f"{spec['metric']} {spec['unit']}")
        fields.setdefault(feature["property"], spec)
    return fields, guessed, left_out


def _settable(expose: dict[str, Any]) -> list[dict[str, Any]]:
    features = _flatten(expose.get("features"))
    return [f for f in features if isinstance(f.get("access"), int) and f["access"] & _SETTABLE
            and f.get("property")]  # fmt: skip


Ids = tuple[UniqueIds, UniqueIds]
"""The device ids and the actuator ids handed out so far."""


def _zigbee_device(base: str, device: dict[str, Any], out: Discovered, ids: Ids) -> None:
    name = device.get("friendly_name")
    if device.get("type") == "Coordinator" or not isinstance(name, str) or not name:
        return
    skip = _zigbee_skip(name, device)
    if skip is not None:
        out.notes.append(f"Zigbee2MQTT {name!r}: {skip}, skipped")
        return
    definition: dict[str, Any] = device["definition"]
    ieee = str(device.get("ieee_address", ""))
    model = " ".join(str(definition.get(k)) for k in ("vendor", "model") if definition.get(k))
    origin = f"Zigbee2MQTT {name!r}" + (f", {model}" if model else "") + (f" ({ieee})" if ieee else "")
    dev_id = ids[0].take(make_id(name, fallback=f"zigbee-{ieee[-6:]}" if ieee else "zigbee"))
    fields, guessed, left_out = _zigbee_fields(definition.get("exposes"))
    if fields:
        comments = device_comments(origin, dev_id, f"the friendly name {name!r}", plain_id(name),
                                   ("units guessed (not announced)", guessed), left_out)  # fmt: skip
        data = {"id": dev_id, "topic": f"{base}/{name}", "profile": "zigbee2mqtt", "fields": fields}
        out.devices.append(Entry(data, comments))
    _zigbee_actuators(base, name, dev_id, origin, definition.get("exposes"), out, ids[1])


def _zigbee_actuators(  # noqa: PLR0917 - one call site, all of them needed
    base: str, name: str, dev_id: str, origin: str, exposes: object, out: Discovered, ids: UniqueIds
) -> None:
    for expose in exposes if isinstance(exposes, list) else []:
        if not isinstance(expose, dict) or expose.get("type") not in Z2M_ACTUATOR_TYPES:
            continue
        settable = _settable(expose)
        if not settable:
            continue
        kind = str(expose["type"])
        endpoint = expose.get("endpoint")
        suffix = "thermostat" if kind == "climate" else kind
        if isinstance(endpoint, str) and endpoint:
            suffix += "-" + make_id(endpoint, fallback="ep")
        act: dict[str, Any] = {"id": ids.take(f"{dev_id}/{suffix}"), "profile": "zigbee2mqtt", "name": name}
        if base != "zigbee2mqtt":
            act["base_topic"] = base
        comments = [f"{origin}: {kind}", "set " + "; ".join(_describe_settable(f) for f in settable)]
        if any(f["access"] & _PUBLISHED for f in settable):
            act["confirm"] = {"timeout": "5s"}
        else:
            comments.append("no read-back: the device does not publish what can be set")
        out.actuators.append(Entry(act, comments))
