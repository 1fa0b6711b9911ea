"""Discovery, the Home Assistant part: ``<prefix>/<component>/[<node_id>/]<object_id>/config``.

For the devices that are neither Zigbee2MQTT nor Tasmota (both announce themselves to
Home Assistant too: a config on a topic of a device found from their own announcements
is left out). Pure, like :mod:`devices.discovery`, which calls :func:`homeassistant`.

- ``sensor`` / ``binary_sensor``: one device per ``state_topic``; ``json`` with a field per
  config whose ``value_template`` is ``{{ value_json.FIELD }}`` (an ``| float`` or ``| int``
  after it is allowed), ``plain`` when there is no template or it is ``{{ value }}``; the unit
  from ``unit_of_measurement``. Any other template: left out, with a note.
- ``switch`` / ``light``: one ``plain`` actuator on ``command_topic`` sending
  ``payload_on``/``payload_off`` (a ``schema: json`` light: a ``json`` one); read-back on
  ``state_topic`` when the state is the plain payload itself (no template or
  ``{{ value }}``, ``state_on``/``state_off`` as sent) or, for a JSON light, its JSON state.
- Configs whose ``origin`` or ``device.manufacturer`` is edgegw are left out (no loop).

Abbreviated keys (``stat_t``, ``cmd_t``, ``dev``...) and the ``~`` base topic are expanded.
"""

from __future__ import annotations

import re
from typing import Any

from devices.discovery import Announcements, Discovered, Entry, Ids, json_payload, make_id
from devices.discovery_tasmota import tasmota_topic

__all__ = ["homeassistant", "value_field"]

SENSORS = ("sensor", "binary_sensor")
ACTUATORS = ("switch", "light")
_ABBREVIATIONS = {
    "stat_t": "state_topic", "cmd_t": "command_topic", "val_tpl": "value_template",
    "stat_val_tpl": "state_value_template", "cmd_tpl": "command_template",
    "unit_of_meas": "unit_of_measurement", "dev": "device", "o": "origin", "pl_on": "payload_on",
    "pl_off": "payload_off", "stat_cla": "state_class",
    "dev_cla": "device_class", "uniq_id": "unique_id", "obj_id": "object_id",
}  # fmt: skip
_DEVICE_ABBREVIATIONS = {"mf": "manufacturer", "mdl": "model", "ids": "identifiers", "sw": "sw_version"}
_KEY = r"(?:\.([A-Za-z_][A-Za-z0-9_]*)|\[['\"]([^'\".\[\]]+)['\"]\])"
_CAST = r"\s*(?P<cast>\|\s*(?:float|int)(?:\([^()]*\))?\s*)?\}\}"
_FIELD = re.compile(r"\{\{\s*value_json((?:" + _KEY + r")+)" + _CAST)
_SEGMENT = re.compile(_KEY)
_VALUE = re.compile(r"\{\{\s*value" + _CAST)


def value_field(template: object) -> tuple[str | None, bool] | None:
    """``(dotted JSON path or None for the plain payload, cast to a number)``; None: cannot map."""
    if template is None:
        return None, False
    if not isinstance(template, str):
        return None
    text = template.strip()
    if match := _FIELD.fullmatch(text):
        path = ".".join(a or b for a, b in _SEGMENT.findall(match.group(1)))
        return path, match.group("cast") is not None
    if match := _VALUE.fullmatch(text):
        return None, match.group("cast") is not None
    return None


def _expand(raw: dict[str, Any]) -> dict[str, Any]:
    config = {_ABBREVIATIONS.get(k, k): v for k, v in raw.items()}
    for key in ("device", "origin"):
        if isinstance(config.get(key), dict):
            config[key] = {_DEVICE_ABBREVIATIONS.get(k, k): v for k, v in config[key].items()}
    base = config.get("~")
    if isinstance(base, str):
        for key, value in list(config.items()):
            if key.endswith("_topic") and isinstance(value, str):
                if value.startswith("~"):
                    config[key] = base + value[1:]
                elif value.endswith("~"):
                    config[key] = value[:-1] + base
    return config


def _covered(found: Announcements) -> list[str]:
    """Topics (and the topics under them) of the Zigbee2MQTT and Tasmota devices announced."""
    out: list[str] = []
    for base in found.zigbee2mqtt:
        out.append(f"{base}/bridge")
        listed = json_payload(found.zigbee2mqtt[base])
        out += [f"{base}/{d['friendly_name']}" for d in (listed if isinstance(listed, list) else [])
                if isinstance(d, dict) and isinstance(d.get("friendly_name"), str)]  # fmt: skip
    for payload in found.tasmota_config.values():
        config = json_payload(payload)
        if isinstance(config, dict):
            out += [t for t in (tasmota_topic(config, i) for i in range(3)) if t]
    return out


def _is_covered(topic: str, covered: list[str]) -> bool:
    return any(topic == c or topic.startswith(c + "/") for c in covered)


def _names(config: dict[str, Any], object_id: str) -> tuple[str, str, str]:
    """(device name, entity name, where it came from) for ids, metrics and comments."""
    raw = config.get("device")
    device: dict[str, Any] = raw if isinstance(raw, dict) else {}
    entity = config.get("name") if isinstance(config.get("name"), str) and config.get("name") else None
    dev_name = device.get("name") if isinstance(device.get("name"), str) and device.get("name") else None
    name = dev_name or entity or object_id
    model = " ".join(str(device[k]) for k in ("manufacturer", "model") if isinstance(device.get(k), str))
    origin = f"Home Assistant {name!r}" + (f", {model}" if model else "")
    metric_name = entity or object_id
    if dev_name and entity and entity.lower().startswith(dev_name.lower() + " "):
        metric_name = entity[len(dev_name) + 1:]
    return name, metric_name, origin


def _from_edgegw(config: dict[str, Any]) -> bool:
    origin, device = config.get("origin"), config.get("device")
    names = [origin.get("name") if isinstance(origin, dict) else None,
             device.get("manufacturer") if isinstance(device, dict) else None]  # fmt: skip
    return any(isinstance(n, str) and n.strip().lower() == "edgegw" for n in names)


class _State:
    """What :func:`homeassistant` builds up: a device per state topic, ids per HA device."""

    def __init__(self, out: Discovered, ids: Ids) -> None:
        self.out, self.ids = out, ids
        self.by_topic: dict[str, Entry] = {}
        self.device_ids: dict[str, str] = {}

    def device_id(self, name: str) -> str:
        if name not in self.device_ids:
            self.device_ids[name] = self.ids[0].take(make_id(name, fallback="ha-device"))
        return self.device_ids[name]


def homeassistant(found: Announcements, out: Discovered, ids: Ids) -> None:
    """Add the devices and actuators of the Home Assistant configs in ``found`` to ``out``."""
    covered, skipped = _covered(found), 0
    state = _State(out, ids)
    for rest in sorted(found.homeassistant):
        where = f"{found.homeassistant_prefix}/{rest}/config"
        levels = rest.split("/")
        component, object_id = levels[0], levels[-1]
        raw = json_payload(found.homeassistant[rest])
        if not isinstance(raw, dict):
            if found.homeassistant[rest]:  # an empty payload deletes the entity: nothing to say
                out.notes.append(f"{where}: not a JSON object, skipped")
            continue
        config = _expand(raw)
        topic = config.get("state_topic" if component in SENSORS else "command_topic")
        if _from_edgegw(config):  # its own device-based configs (homeassistant: in the config) too
            out.notes.append(f"{where}: published by edgegw itself, skipped")
        elif component not in SENSORS + ACTUATORS:
            out.notes.append(f"{where}: Home Assistant {component!r} configs are not read, skipped")
        elif not isinstance(topic, str) or not topic:
            out.notes.append(f"{where}: no {'state' if component in SENSORS else 'command'} topic, skipped")
        elif _is_covered(topic, covered):
            skipped += 1
        elif any(c in topic for c in "+#") or any(lvl != lvl.strip() for lvl in topic.split("/")):
            out.notes.append(f"{where}: the topic {topic!r} has a wildcard or a space at a level's end, "
                             "skipped")  # fmt: skip
        elif component in SENSORS:
            _sensor(where, component, object_id, config, topic, state)
        else:
            _actuator(where, component, object_id, config, topic, state)
    if skipped:
        out.notes.append(f"{skipped} Home Assistant configs of the Zigbee2MQTT and Tasmota devices above: "
                         "already read from their own announcements")  # fmt: skip


def _metric(name: str) -> str:
    return make_id(name, fallback="value").replace("-", "_")


def _sensor(  # noqa: PLR0917 - one call site
    where: str, component: str, object_id: str, config: dict[str, Any], topic: str, state: _State
) -> None:
    mapped = value_field(config.get("value_template"))
    if mapped is None:
        state.out.notes.append(f"{where}: value_template {config.get('value_template')!r} cannot be mapped "
                               "(only {{ value_json.FIELD }} and {{ value }}), skipped")  # fmt: skip
        return
    path, cast = mapped
    name, metric_name, origin = _names(config, object_id)
    unit = config.get("unit_of_measurement")
    unit = unit if isinstance(unit, str) and unit else None
    number = component == "sensor" and (cast or unit is not None or "state_class" in config)
    kind = "number" if number else "any" if path else "auto"
    binary = ""
    if component == "binary_sensor":
        on, off = config.get("payload_on", "ON"), config.get("payload_off", "OFF")
        binary = f" (binary: on is {on!r}, off is {off!r})"
    entry = state.by_topic.get(topic)
    if entry is not None:
        if path is None or entry.data["profile"] != "json" or path in entry.data["fields"]:
            state.out.notes.append(f"{where}: {topic} is read already by {entry.data['id']}, skipped")
            return
        entry.data["fields"][path] = _spec(_metric(path.rsplit(".", 1)[-1]), kind, unit)
        entry.comments.append(f"{path} from {where}{binary}")
        return
    dev_id = state.device_id(name)
    if any(e.data["id"] == dev_id for e in state.out.devices):
        dev_id = state.ids[0].take(make_id(f"{name} {metric_name}", fallback="ha-device"))
    data: dict[str, Any] = {"id": dev_id, "topic": topic}
    comments = [f"{origin}: {where}{binary}"]
    if path is None:
        data.update(profile="plain", metric=_metric(metric_name))
        if unit:
            data["unit"] = unit
        data["value_type"] = kind
    else:
        data.update(profile="json", fields={path: _spec(_metric(path.rsplit(".", 1)[-1]), kind, unit)})
    if unit is None and number:
        comments.append("no unit announced")
    entry = Entry(data, comments)
    state.by_topic[topic] = entry
    state.out.devices.append(entry)


def _spec(metric: str, kind: str, unit: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = {"metric": metric, "type": kind}
    if unit:
        spec["unit"] = unit
    return spec


def _actuator(  # noqa: PLR0917 - one call site
    where: str, component: str, object_id: str, config: dict[str, Any], topic: str, state: _State
) -> None:
    if config.get("command_template") is not None:
        template = config["command_template"]
        state.out.notes.append(f"{where}: command_template {template!r} cannot be mapped, skipped")
        return
    name, _, origin = _names(config, object_id)
    json_schema = component == "light" and config.get("schema") == "json"
    act: dict[str, Any] = {"id": state.ids[1].take(f"{state.device_id(name)}/{component}"),
                           "profile": "json" if json_schema else "plain", "topic": topic}  # fmt: skip
    comments = [f"{origin}: {component}, {where}"]
    on, off = str(config.get("payload_on", "ON")), str(config.get("payload_off", "OFF"))
    if json_schema:
        brightness = ", brightness: 0..255" if config.get("brightness") else ""
        comments.append(f"set {{state: ON/OFF{brightness}}}")
    else:
        pairs = (("payload_on", on, "ON"), ("payload_off", off, "OFF"))
        act.update({key: text for key, text, default in pairs if text != default})
        comments.append(f"set {{state: true}} / {{state: false}}: sent as the plain payloads {on!r}/{off!r}")
    state_topic = config.get("state_topic")
    template = config.get("state_value_template" if component == "light" else "value_template")
    mapped = value_field(template)
    if not isinstance(state_topic, str) or not state_topic or "+" in state_topic or "#" in state_topic:
        comments.append("no read-back: no state topic announced")
    elif json_schema:
        act["confirm"] = {"timeout": "5s", "state_topic": state_topic}
    elif mapped is None or mapped[0] is not None:
        comments.append(f"no read-back: the state on {state_topic} needs the template {template!r} "
                        "(a plain actuator's read-back compares the whole payload)")  # fmt: skip
    elif (reads := (config.get("state_on", on), config.get("state_off", off))) != (on, off):
        comments.append(f"no read-back: the state on {state_topic} reads {reads[0]!r}/{reads[1]!r}, "
                        "not what is sent")  # fmt: skip
    else:
        act["confirm"] = {"timeout": "5s", "state_topic": state_topic}
    state.out.actuators.append(Entry(act, comments))
