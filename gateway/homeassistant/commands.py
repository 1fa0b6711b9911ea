"""Home Assistant's commands into actuator payloads, and actuator payloads into the state
HA shows. Pure.

- ``switch``: ``ON`` / ``OFF`` on ``<base>/actuators/<id>/set`` set ``state_key`` to the
  actuator's on or off value (``{"state": "on"}`` for a rule-driven ``on``...);
- ``light`` (JSON schema): ``{"state": "ON", "brightness": 0..255}``, nothing else;
- ``climate``: ``off`` / ``auto`` on ``.../set/mode`` switch it, a number within
  ``min_temp..max_temp`` on ``.../set/target`` sets ``target_key``.

Anything else is refused (:class:`CommandRefusedError`): the command topic reaches only
this actuator, with only these payloads.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from gateway.errors import CommandRefusedError
from gateway.homeassistant.discovery import CommandTarget, ResolvedActuator

__all__ = ["actuator_state", "translate"]


def _same(value: Any, want: Any) -> bool:
    if isinstance(value, str) and isinstance(want, str):
        return value.lower() == want.lower()
    return bool(value == want)


def actuator_state(act: ResolvedActuator, payload: Mapping[str, Any]) -> dict[str, Any]:
    """The state document HA reads for ``act``, from the commands sent to it (merged)."""
    raw = payload.get(act.state_key)
    state = None if raw is None else "OFF" if raw is False or _same(raw, act.off_value) else "ON"
    if act.platform == "climate":
        mode = None if state is None else "off" if state == "OFF" else "auto"
        return {"mode": mode, "target": payload.get(act.target_key)}
    doc: dict[str, Any] = {"state": state}
    if act.platform == "light":
        doc["color_mode"] = "brightness" if act.brightness else "onoff"
        if act.brightness and isinstance(payload.get("brightness"), int | float):
            doc["brightness"] = payload["brightness"]
    return doc


def _switch(act: ResolvedActuator, word: str) -> dict[str, Any]:
    if word.upper() == "ON":
        return {act.state_key: act.on_value}
    if word.upper() == "OFF":
        return {act.state_key: act.off_value}
    raise CommandRefusedError(f"expected ON or OFF, got {word[:40]!r}")


def _light(act: ResolvedActuator, text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise CommandRefusedError("a JSON light command is a JSON object") from exc
    if not isinstance(data, dict) or not isinstance(data.get("state"), str):
        raise CommandRefusedError('a JSON light command needs "state": "ON" or "OFF"')
    extra = set(data) - {"state", "brightness", "transition"}
    if "brightness" in data and not act.brightness:
        extra.add("brightness")
    if extra:
        raise CommandRefusedError(f"{act.id} does not take {sorted(extra)}")
    out = _switch(act, data["state"])
    if "brightness" in data:
        level = data["brightness"]
        if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= 255:
            raise CommandRefusedError("brightness is a whole number from 0 to 255")
        out["brightness"] = level
    return out


def _climate(act: ResolvedActuator, part: str, text: str) -> dict[str, Any]:
    if part == "mode":
        if text == "off":
            return {act.state_key: act.off_value}
        if text == "auto":
            return {act.state_key: act.on_value}
        raise CommandRefusedError(f"expected mode off or auto, got {text[:40]!r}")
    try:
        value = float(text)
    except ValueError as exc:
        raise CommandRefusedError(f"a target temperature is a number, got {text[:40]!r}") from exc
    if not act.min_temp <= value <= act.max_temp:
        raise CommandRefusedError(f"target {value} is outside {act.min_temp}..{act.max_temp}")
    return {act.target_key: value}


def translate(target: CommandTarget, payload: bytes) -> dict[str, Any]:
    """The actuator payload for a message on ``target``'s command topic."""
    try:
        text = payload.decode().strip()
    except UnicodeDecodeError as exc:
        raise CommandRefusedError("not UTF-8") from exc
    act = target.actuator
    if act.platform == "switch":
        return _switch(act, text)
    if act.platform == "light":
        return _light(act, text)
    return _climate(act, target.part, text)
