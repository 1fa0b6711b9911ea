"""Payload profiles: bytes from a device into :class:`~gateway.model.Reading` objects.

One decoder per configured device, built once from its :class:`~devices.config.DeviceConfig`.
``decoder.decode(topic, payload, now)`` returns the readings of one message or raises
:class:`~gateway.errors.PayloadError` with a short ``reason`` that is counted per device:

``too_large``, ``not_utf8``, ``invalid_json``, ``not_finite``, ``wrong_type``,
``no_values``, ``bad_timestamp``, ``bad_format``.

Nothing else escapes a decoder for any input (a property test holds it to that). The
decoders are plain slotted objects: no pydantic, no per-message allocation beyond the
parsed JSON and the readings.

Profiles:

- ``json``: generic JSON object; ``fields`` picks dotted paths and names their metrics
  (all top-level scalars when empty); ``timestamp_field`` gives the source time.
- ``plain``: the whole payload is one number, boolean (``true``/``false``) or string.
- ``zigbee2mqtt``: a Zigbee2MQTT device state object (``zigbee2mqtt/<name>``); each
  scalar key is a metric, with the usual units.
- ``tasmota``: ``tele/<topic>/SENSOR`` (``{"AM2301": {"Temperature": 21.3}, ...}`` gives
  ``am2301_temperature``; ``ENERGY.Power`` gives ``energy_power``) and
  ``tele/<topic>/STATE`` (``POWER``, ``POWER1``... give ``power``, ``power1``...).
- ``kv``: ``key=value,key=value`` text (serial lines).
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from devices.config import DeviceConfig, FieldSpec
from gateway.errors import PayloadError
from gateway.model import Reading, Value

__all__ = ["Decoder", "build_decoder", "parse_timestamp"]

MAX_STRING = 256
"""Longest string value accepted as a reading (longer ones are ``wrong_type``)."""

Z2M_UNITS: dict[str, str] = {
    "temperature": "°C", "local_temperature": "°C", "humidity": "%", "pressure": "hPa",
    "co2": "ppm", "voc": "ppb", "pm25": "µg/m³", "illuminance": "lx", "illuminance_lux": "lx",
    "power": "W", "energy": "kWh", "voltage": "V", "current": "A", "battery": "%",
    "soil_moisture": "%", "occupancy_timeout": "s",
}  # fmt: skip
TASMOTA_UNITS: dict[str, str] = {
    "Humidity": "%", "Pressure": "hPa", "Power": "W", "ApparentPower": "VA",
    "ReactivePower": "VAr", "Voltage": "V", "Current": "A", "Total": "kWh", "Today": "kWh",
    "Yesterday": "kWh", "Illuminance": "lx", "CarbonDioxide": "ppm", "Factor": "",
}  # fmt: skip
_TASMOTA_SKIP = frozenset({"Time", "TempUnit", "PressureUnit", "SpeedUnit", "TotalStartTime"})


def _reject_constant(name: str) -> Any:
    raise PayloadError("not_finite", name)


_JSON = json.JSONDecoder(parse_constant=_reject_constant)
_loads = orjson.loads


class Decoder(Protocol):
    device_id: str

    def decode(self, topic: str, payload: bytes | bytearray, now: float) -> list[Reading]: ...


def build_decoder(cfg: DeviceConfig) -> Decoder:
    """The decoder for one configured device."""
    if cfg.profile == "plain":
        return PlainDecoder(cfg)
    if cfg.profile == "tasmota":
        return TasmotaDecoder(cfg)
    if cfg.profile == "kv":
        return KeyValueDecoder(cfg)
    # json and zigbee2mqtt differ only in the default units
    return JsonDecoder(cfg, units=Z2M_UNITS if cfg.profile == "zigbee2mqtt" else {})


# ---------------------------------------------------------------------- helpers
def _text(payload: bytes | bytearray, limit: int) -> str:
    if len(payload) > limit:
        raise PayloadError("too_large", f"{len(payload)} bytes > {limit}")
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError("not_utf8", f"at byte {exc.start}") from None


def _json(payload: bytes | bytearray, limit: int) -> Any:
    if len(payload) > limit:
        raise PayloadError("too_large", f"{len(payload)} bytes > {limit}")
    try:
        # orjson accepts a subset of what the stdlib does (strict UTF-8, no NaN, 64-bit
        # integers) and decodes it alike, ~5x faster; the rest goes the slow way below,
        # which accepts it or names the problem
        return _loads(payload)
    except orjson.JSONDecodeError:
        pass
    text = _text(payload, limit)
    try:
        return _JSON.decode(text)
    except PayloadError:
        raise
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, int too long, deep nesting
        raise PayloadError("invalid_json", str(exc)[:80]) from None


def _scalar(value: object, kind: str, where: str) -> Value:
    """A JSON value as a reading value, or PayloadError."""
    if isinstance(value, bool):
        if kind in ("any", "bool"):
            return value
    elif isinstance(value, int | float):
        if kind in ("any", "number"):
            try:
                number = float(value)
            except OverflowError:
                raise PayloadError("not_finite", where) from None
            if not math.isfinite(number):
                raise PayloadError("not_finite", where)
            return number
    elif isinstance(value, str) and kind in ("any", "string") and len(value) <= MAX_STRING:
        return value
    raise PayloadError("wrong_type", f"{where}: {type(value).__name__}")


def _auto_scalar(value: object, where: str) -> Value | None:
    """For profiles that take every key: None for values that are not readings."""
    if isinstance(value, bool | str):
        return value if not isinstance(value, str) or len(value) <= MAX_STRING else None
    if isinstance(value, int | float):
        return _scalar(value, "number", where)
    return None


def parse_timestamp(value: object) -> float:
    """Epoch seconds, epoch milliseconds or ISO 8601 (``Z`` or an offset; naive means UTC)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        ts = float(value)
        if not math.isfinite(ts) or ts < 0:
            raise PayloadError("bad_timestamp", repr(value)[:40])
        return ts / 1000.0 if ts > 1e11 else ts
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise PayloadError("bad_timestamp", value[:40]) from None
        if parsed.tzinfo is None:
            return parsed.replace(tzinfo=UTC).timestamp()
        return parsed.timestamp()
    raise PayloadError("bad_timestamp", type(value).__name__)


def _compile_fields(fields: dict[str, FieldSpec]) -> list[tuple[tuple[str, ...], str, str, str | None]]:
    return [(tuple(path.split(".")), path, spec.type, spec.unit) for path, spec in fields.items()]


def _lookup(obj: object, path: tuple[str, ...]) -> object:
    for key in path:
        if not isinstance(obj, dict):
            return _MISSING
        obj = obj.get(key, _MISSING)
        if obj is _MISSING:
            return _MISSING
    return obj


_MISSING: Any = object()


# ---------------------------------------------------------------------- decoders
class JsonDecoder:
    """Generic JSON and Zigbee2MQTT state objects."""

    __slots__ = ("_fields", "_metrics", "_ts_path", "_units", "device_id", "max_payload")

    def __init__(self, cfg: DeviceConfig, *, units: dict[str, str]) -> None:
        self.device_id = cfg.id
        self.max_payload = cfg.max_payload
        self._fields = _compile_fields(cfg.fields)
        self._metrics = {path: spec.metric for path, spec in cfg.fields.items()}
        self._units = units
        self._ts_path = tuple(cfg.timestamp_field.split(".")) if cfg.timestamp_field else None

    def decode(self, topic: str, payload: bytes | bytearray, now: float) -> list[Reading]:
        obj = _json(payload, self.max_payload)
        if not isinstance(obj, dict):
            raise PayloadError("wrong_type", f"expected a JSON object, got {type(obj).__name__}")
        ts = now
        if self._ts_path is not None:
            raw = _lookup(obj, self._ts_path)
            if raw is not _MISSING:
                ts = parse_timestamp(raw)
        device = self.device_id
        out: list[Reading] = []
        if self._fields:
            metrics = self._metrics
            for path, name, kind, unit in self._fields:
                raw = _lookup(obj, path)
                if raw is _MISSING or raw is None:
                    continue
                value = _scalar(raw, kind, name)
                out.append(Reading(device, metrics[name], value, ts, now, unit))
        else:
            units = self._units
            ts_key = self._ts_path[0] if self._ts_path is not None and len(self._ts_path) == 1 else None
            for key, raw in obj.items():
                if key == ts_key:
                    continue
                auto = _auto_scalar(raw, key)
                if auto is not None:
                    out.append(Reading(device, key, auto, ts, now, units.get(key)))
        if not out:
            raise PayloadError("no_values", "no configured field in the payload")
        return out


class PlainDecoder:
    """The whole payload is one value: a number, ``true``/``false`` or a string."""

    __slots__ = ("_kind", "_metric", "_unit", "device_id", "max_payload")

    def __init__(self, cfg: DeviceConfig) -> None:
        self.device_id = cfg.id
        self.max_payload = cfg.max_payload
        self._metric = cfg.metric
        self._unit = cfg.unit
        self._kind = cfg.value_type

    def decode(self, topic: str, payload: bytes | bytearray, now: float) -> list[Reading]:
        text = _text(payload, self.max_payload).strip()
        value = parse_plain(text, self._kind)
        metric = self._metric or topic.rsplit("/", 1)[-1]
        return [Reading(self.device_id, metric, value, now, now, self._unit)]


def parse_plain(text: str, kind: str) -> Value:
    """A plain text value: numbers, then booleans, then (printable) strings."""
    lowered = text.lower()
    if kind in ("auto", "bool") and lowered in ("true", "false"):
        return lowered == "true"
    if kind in ("auto", "number"):
        try:
            number = float(text)
        except ValueError:
            if kind == "number":
                raise PayloadError("wrong_type", f"not a number: {text[:40]!r}") from None
        else:
            if not math.isfinite(number):
                raise PayloadError("not_finite", text[:40])
            return number
    if kind == "bool":
        raise PayloadError("wrong_type", f"not a boolean: {text[:40]!r}")
    if not text or len(text) > MAX_STRING or not text.isprintable():
        raise PayloadError("wrong_type", f"not a value: {text[:40]!r}")
    return text


class TasmotaDecoder:
    """Tasmota ``tele/<topic>/SENSOR`` and ``tele/<topic>/STATE``; ``LWT`` is ignored."""

    __slots__ = ("_renames", "device_id", "max_payload")

    def __init__(self, cfg: DeviceConfig) -> None:
        self.device_id = cfg.id
        self.max_payload = cfg.max_payload
        self._renames = dict(cfg.fields)

    def decode(self, topic: str, payload: bytes | bytearray, now: float) -> list[Reading]:
        kind = topic.rsplit("/", 1)[-1]
        if kind == "LWT":
            _text(payload, self.max_payload)
            return []
        obj = _json(payload, self.max_payload)
        if not isinstance(obj, dict):
            raise PayloadError("wrong_type", f"expected a JSON object, got {type(obj).__name__}")
        pairs: list[tuple[str, str, object, str | None]] = []  # (path, default metric, raw, unit)
        if kind == "STATE":
            pairs = [(k, k.lower(), v, None) for k, v in obj.items() if k.startswith("POWER")]
        else:
            temp_unit = "°F" if obj.get("TempUnit") == "F" else "°C"
            for key, raw in obj.items():
                if key in _TASMOTA_SKIP:
                    continue
                if isinstance(raw, dict):
                    for field, inner in raw.items():
                        if field in _TASMOTA_SKIP:
                            continue
                        unit = temp_unit if field in ("Temperature", "DewPoint") else TASMOTA_UNITS.get(field)
                        pairs.append((f"{key}.{field}", f"{key}_{field}".lower(), inner, unit or None))
                else:
                    pairs.append((key, key.lower(), raw, TASMOTA_UNITS.get(key)))
        return _readings(self.device_id, pairs, self._renames, now)


def _readings(
    device: str,
    pairs: list[tuple[str, str, object, str | None]],
    renames: dict[str, FieldSpec],
    now: float,
) -> list[Reading]:
    out: list[Reading] = []
    for path, metric, raw, unit in pairs:
        if renames:
            spec = renames.get(path)
            if spec is None or raw is None:
                continue
            out.append(Reading(device, spec.metric, _scalar(raw, spec.type, path), now, now,
                               spec.unit or unit))
        else:
            value = _auto_scalar(raw, path)
            if value is not None:
                out.append(Reading(device, metric, value, now, now, unit))
    if not out:
        raise PayloadError("no_values", "no readable value in the payload")
    return out


class KeyValueDecoder:
    """``key=value,key=value`` (serial lines); values as in the plain profile."""

    __slots__ = ("_renames", "device_id", "max_payload")

    def __init__(self, cfg: DeviceConfig) -> None:
        self.device_id = cfg.id
        self.max_payload = cfg.max_payload
        self._renames = dict(cfg.fields)

    def decode(self, topic: str, payload: bytes | bytearray, now: float) -> list[Reading]:
        text = _text(payload, self.max_payload).strip()
        pairs: list[tuple[str, str, object, str | None]] = []
        for part in text.split(","):
            if not part.strip():
                continue
            key, sep, raw = part.partition("=")
            key = key.strip()
            if not sep or not key or not key.isprintable():
                raise PayloadError("bad_format", f"not key=value: {part[:40]!r}")
            spec = self._renames.get(key)
            kind = spec.type if spec is not None else "auto"
            value = parse_plain(raw.strip(), "auto" if kind in ("any", "auto") else kind)
            pairs.append((key, key, value, None))
        return _readings(self.device_id, pairs, self._renames, now)
