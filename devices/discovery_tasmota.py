"""Discovery, the Tasmota part: ``<prefix>/<mac>/config`` and ``<prefix>/<mac>/sensors``.

The config (``dn``/``fn`` names, ``t`` topic, ``ft`` full topic, ``tp`` prefixes, ``rl``
relays and lights) and the SENSOR sample (``sn``) of one device become a device on
``tele/<t>/SENSOR`` with the sample's values as fields, and one actuator per relay, light
or shutter on ``cmnd/<t>/...`` (read-back on ``stat/<t>/RESULT``). Pure, like
:mod:`devices.discovery`, which calls :func:`tasmota_device`.
"""

from __future__ import annotations

from typing import Any

from devices.discovery import Discovered, Entry, Ids, device_comments, make_id, plain_id
from devices.profiles import TASMOTA_UNITS

__all__ = ["tasmota_device", "tasmota_topic"]

_TASMOTA_SKIP = frozenset({"Time", "TempUnit", "PressureUnit", "SpeedUnit", "TotalStartTime"})
_TASMOTA_RELAY, _TASMOTA_LIGHT, _TASMOTA_SHUTTER = 1, 2, 3


def tasmota_topic(config: dict[str, Any], prefix_index: int) -> str | None:
    """The device's full topic for ``tp[prefix_index]`` (cmnd, stat, tele), or None."""
    topic, full, prefixes = config.get("t"), config.get("ft", "%prefix%/%topic%/"), config.get("tp")
    if not isinstance(topic, str) or not topic or not isinstance(full, str):
        return None
    default = ("cmnd", "stat", "tele")
    if not isinstance(prefixes, list) or len(prefixes) < 3 or not all(isinstance(p, str) for p in prefixes):
        prefixes = list(default)
    mac = str(config.get("mac", ""))
    result = (full.replace("%prefix%", prefixes[prefix_index]).replace("%topic%", topic)
              .replace("%hostname%", str(config.get("hn", ""))).replace("%id%", mac[-6:]))  # fmt: skip
    if "%" in result or "+" in result or "#" in result:
        return None
    return result.rstrip("/")


def _tasmota_fields(sample: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], list[str], list[str]]:
    fields: dict[str, dict[str, Any]] = {}
    guessed: list[str] = []
    left_out: list[str] = []
    temp_unit = "°F" if sample.get("TempUnit") == "F" else "°C"

    def one(path: str, metric: str, key: str, value: object) -> None:
        if isinstance(value, bool):
            fields[path] = {"metric": metric, "type": "bool"}
        elif isinstance(value, int | float):
            spec: dict[str, Any] = {"metric": metric, "type": "number"}
            unit = temp_unit if key in ("Temperature", "DewPoint") else TASMOTA_UNITS.get(key)
            if unit:
                spec["unit"] = unit
                guessed.append(f"{metric} {unit}")
            fields[path] = spec
        elif isinstance(value, str):
            fields[path] = {"metric": metric, "type": "string"}
        else:
            left_out.append(f"{path} ({type(value).__name__})")

    for key, raw in sample.items():
        if key in _TASMOTA_SKIP:
            continue
        if isinstance(raw, dict):
            for name, inner in raw.items():
                if name not in _TASMOTA_SKIP:
                    one(f"{key}.{name}", f"{key}_{name}".lower(), name, inner)
        else:
            one(key, key.lower(), key, raw)
    return fields, guessed, left_out


_TASMOTA_KINDS = {_TASMOTA_RELAY: "relay", _TASMOTA_LIGHT: "light", _TASMOTA_SHUTTER: "shutter"}


def tasmota_device(
    mac: str, config: dict[str, Any], sample: dict[str, Any], out: Discovered, ids: Ids
) -> None:
    names = config.get("fn")
    first = names[0] if isinstance(names, list) and names and isinstance(names[0], str) else None
    label = next((n for n in (config.get("dn"), first, config.get("t")) if isinstance(n, str) and n), mac)
    model = f", {config['md']}" if isinstance(config.get("md"), str) else ""
    origin = f"Tasmota {label!r}{model} ({mac})"
    tele, cmnd = tasmota_topic(config, 2), tasmota_topic(config, 0)
    topic = config.get("t")
    if tele is None or cmnd is None or not isinstance(topic, str):
        out.notes.append(f"{origin}: its full topic {config.get('ft')!r} cannot be resolved, skipped")
        return
    dev_id = ids[0].take(make_id(label, fallback=f"tasmota-{mac[-6:].lower()}"))
    fields, guessed, left_out = _tasmota_fields(sample)
    if fields:
        guesses = ("units guessed from the names (not announced)", guessed)
        named = f"the device name {label!r}"
        comments = device_comments(origin, dev_id, named, plain_id(label), guesses, left_out)
        data = {"id": dev_id, "topic": f"{tele}/SENSOR", "profile": "tasmota", "fields": fields}
        out.devices.append(Entry(data, comments))
    relays = config.get("rl")
    kinds = [r for r in relays if isinstance(r, int)] if isinstance(relays, list) else []
    used = [(i + 1, _TASMOTA_KINDS[r]) for i, r in enumerate(kinds) if r in _TASMOTA_KINDS]
    if not used:
        return
    if cmnd != f"cmnd/{topic}":
        out.notes.append(f"{origin}: takes commands on {cmnd}/..., but edgegw's tasmota actuators send to "
                         "cmnd/<topic>/...; no actuator written")  # fmt: skip
        return
    several = sum(1 for _, kind in used if kind != "shutter") > 1
    for n, kind in used:
        act: dict[str, Any] = {"profile": "tasmota", "name": topic}
        if kind == "shutter":
            act["id"] = ids[1].take(f"{dev_id}/shutter{n}")
            comments = [f"{origin}: shutter {n}", f"set {{ShutterPosition{n}: 0..100}} (percent open)",
                        "no read-back: Tasmota reports shutters as Shutter<n>.Position"]  # fmt: skip
        else:
            act["id"] = ids[1].take(f"{dev_id}/{kind}{n if several else ''}")
            what = f"set {{{f'POWER{n}' if several else 'state'}: ON/OFF/TOGGLE}}"
            comments = [f"{origin}: {kind} {n}", what + ("; Dimmer: 0..100" if kind == "light" else "")]
            act["confirm"] = {"timeout": "5s"}
        out.actuators.append(Entry({"id": act.pop("id"), **act}, comments))
