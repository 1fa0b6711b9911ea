"""What ``edgegw discover`` found, as a config file: written new, or merged into one.

Text in, text out (ruamel round trip, so a merged file keeps its comments and order);
the command in :mod:`gateway.commands.discover` does the MQTT and the files.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from devices.discovery import Discovered, Entry, UniqueIds
from gateway.errors import ConfigError, ConfigIssue

__all__ = ["Merged", "merge_config", "render_config"]

HEADER = """\
Written by `edgegw discover` from the devices' retained announcements.
Check it with `edgegw check --config FILE`; comments mark what was guessed.
Metrics are addressed in rules as device/metric, e.g. living-room/temperature."""


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 120
    return yaml


def _commented(value: Any) -> Any:
    if isinstance(value, dict):
        out = CommentedMap()
        for key, inner in value.items():
            out[key] = _commented(inner)
        if len(value) <= 3 and all(not isinstance(v, dict | list) for v in value.values()):
            out.fa.set_flow_style()
        return out
    return value


def _append(seq: CommentedSeq, entries: Iterable[Entry]) -> int:
    count = 0
    for entry in entries:
        seq.append(_commented(entry.data))
        if entry.comments:
            seq.yaml_set_comment_before_after_key(len(seq) - 1, before="\n".join(entry.comments), indent=2)
        count += 1
    return count


def _dump(data: CommentedMap) -> str:
    stream = io.StringIO()
    _yaml().dump(data, stream)
    return stream.getvalue()


def render_config(found: Discovered, *, host: str, port: int) -> str:
    """A new config file: the broker, then the devices and actuators found."""
    doc = CommentedMap()
    doc["mqtt"] = _commented({"host": host, "port": port})
    header = HEADER
    if found.notes:
        header += "\n\nLeft out:\n" + "\n".join(f"- {note}" for note in found.notes)
    doc.yaml_set_start_comment(header)
    doc["devices"] = CommentedSeq()
    _append(doc["devices"], found.devices)
    doc["actuators"] = CommentedSeq()
    _append(doc["actuators"], found.actuators)
    return _dump(doc)


@dataclass
class Merged:
    text: str
    added: list[str]
    """Ids of the devices and actuators added."""
    kept: list[str]
    """Ids of what was found but already there (same topic or device name), left alone."""


def _ids(items: list[Any]) -> set[str]:
    return {str(i["id"]) for i in items if isinstance(i, dict) and "id" in i}


def _target(actuator: dict[str, Any]) -> tuple[object, object, object, object]:
    """What an actuator commands: the device name (and base topic), or the topic (json)."""
    return (actuator.get("profile", "json"), actuator.get("name"), actuator.get("base_topic", "zigbee2mqtt"),
            actuator.get("topic"))  # fmt: skip


def merge_config(text: str, found: Discovered, *, file: str = "<config>") -> Merged:
    """``text`` with what is new in ``found`` added, the rest as it was.

    A device counts as there when a device reads its topic; an actuator when one with the
    same profile and name (and base topic), or the same topic (json), is declared. New ids
    avoid the ones taken.
    """
    yaml = _yaml()
    try:
        doc = yaml.load(text)
    except Exception as exc:  # ruamel raises many kinds; all mean "not YAML" here
        raise ConfigError([ConfigIssue(f"cannot read it as YAML: {exc}", file)]) from exc
    if doc is None:
        doc = CommentedMap()
    if not isinstance(doc, CommentedMap):
        raise ConfigError([ConfigIssue("a config file is a mapping (mqtt:, devices:...)", file, 1, 1)])
    devices = doc.setdefault("devices", CommentedSeq())
    actuators = doc.setdefault("actuators", CommentedSeq())
    if not isinstance(devices, list) or not isinstance(actuators, list):
        raise ConfigError([ConfigIssue("devices and actuators must be lists", file, 1, 1)])
    topics = {d.get("topic") for d in devices if isinstance(d, dict)}
    names = {_target(a) for a in actuators if isinstance(a, dict)}
    new_devices = [e for e in found.devices if e.data["topic"] not in topics]
    new_actuators = [e for e in found.actuators if _target(e.data) not in names]
    kept = [str(e.data["id"]) for e in found.devices + found.actuators
            if e not in new_devices and e not in new_actuators]  # fmt: skip
    if not isinstance(devices, CommentedSeq):
        devices = doc["devices"] = CommentedSeq(devices)
    if not isinstance(actuators, CommentedSeq):
        actuators = doc["actuators"] = CommentedSeq(actuators)
    device_ids, actuator_ids = UniqueIds(_ids(devices)), UniqueIds(_ids(actuators))
    renamed: dict[str, str] = {}
    for entry in new_devices:
        old = entry.data["id"]
        entry.data["id"] = renamed[old] = device_ids.take(old)
    for entry in new_actuators:
        device, sep, rest = str(entry.data["id"]).partition("/")
        entry.data["id"] = actuator_ids.take(renamed.get(device, device) + sep + rest)
    _append(devices, new_devices)
    _append(actuators, new_actuators)
    added = [str(e.data["id"]) for e in new_devices + new_actuators]
    return Merged(_dump(doc) if added else text, added, kept)
