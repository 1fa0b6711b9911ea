"""Durations as users write them in rules and scenarios: ``30s``, ``2m``, ``1h30m``.

Units are ``d``, ``h``, ``m``, ``s`` and ``ms``, largest first, each at most once.
A bare number is refused on purpose: ``for: 30`` could mean seconds or minutes.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, WithJsonSchema

__all__ = ["DURATION_PATTERN", "Duration", "format_duration", "parse_duration"]

_UNITS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|d|h|m|s)")
DURATION_PATTERN = r"^(\d+(\.\d+)?d)?(\d+(\.\d+)?h)?(\d+(\.\d+)?m)?(\d+(\.\d+)?s)?(\d+(\.\d+)?ms)?$"
_FULL = re.compile(DURATION_PATTERN)
_NUMBER = re.compile(r"^\d+(\.\d+)?$")


def _no_unit(number: str) -> str:
    return (
        f"bad duration {number}: it needs a unit, write {number}s, {number}m or {number}h "
        "(a bare number could mean seconds or minutes)"
    )


def parse_duration(text: str) -> float:
    """Seconds in ``text`` (``1h30m`` -> 5400.0); ``ValueError`` with a plain message."""
    cleaned = text.strip()
    if _NUMBER.match(cleaned):
        raise ValueError(_no_unit(cleaned))
    if not cleaned or not _FULL.match(cleaned):
        raise ValueError(
            f"bad duration {text!r}: write a number and a unit, such as 30s, 2m, 1h or 1h30m"
        )
    return sum(float(num) * _UNITS[unit] for num, unit in _PART.findall(cleaned))


def format_duration(seconds: float) -> str:
    """The shortest spelling of ``seconds`` (``150`` -> ``2m30s``), for messages."""
    if seconds < 0:
        return "-" + format_duration(-seconds)
    if seconds == 0:
        return "0s"
    millis = round(seconds * 1000)
    parts: list[str] = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        count, millis = divmod(millis, size)
        if count:
            parts.append(f"{count}{unit}")
    if millis:
        parts.append(f"{millis}ms")
    return "".join(parts)


def _validate(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        raise ValueError(_no_unit(str(value)))
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError(
            f"bad duration {value!r}: write a number and a unit, such as 30s, 2m, 1h or 1h30m"
        )
    return parse_duration(value)


Duration = Annotated[
    float,
    BeforeValidator(_validate),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": DURATION_PATTERN,
            "description": "A duration: 30s, 2m, 1h, 1h30m (units d, h, m, s, ms).",
        }
    ),
]
"""A pydantic field type: a duration string in YAML, seconds (``float``) in Python."""
