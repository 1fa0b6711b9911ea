"""Building blocks shared by every package's config models: durations and secret references.

A leaf module (see :mod:`common`): it imports nothing of the project, so ``devices/``,
``bridge/`` and ``gateway/`` config models all use the same duration syntax and the same
secret reference (one parser, one set of messages).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, model_validator

__all__ = ["Duration", "SecretRef", "parse_duration"]

_DURATION = re.compile(
    r"^(?:(\d+(?:\.\d+)?)d)?(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?"
    r"(?:(\d+(?:\.\d+)?)s)?(?:(\d+)ms)?$"
)
_UNITS = (86400.0, 3600.0, 60.0, 1.0, 0.001)


def parse_duration(value: object) -> float:
    """Seconds from ``250ms``, ``30s``, ``2m``, ``1h30m``, ``7d`` or a plain number of seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or text like 30s, 2m, 1h30m, 7d")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        match = _DURATION.fullmatch(text)
        if not text or match is None or not any(match.groups()):
            raise ValueError(f"invalid duration {value!r}: write e.g. 250ms, 30s, 2m, 1h30m, 7d")
        seconds = sum(float(g) * unit for g, unit in zip(match.groups(), _UNITS, strict=True) if g)
    else:
        raise ValueError("a duration is a number of seconds or text like 30s, 2m, 1h30m, 7d")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]
"""A config field holding a duration in seconds, written as text or as a number."""


class SecretRef(BaseModel):
    """Where a secret comes from: exactly one of a file, an environment variable or a
    systemd credential (``LoadCredential=NAME:...``, read from ``$CREDENTIALS_DIRECTORY``).
    Never the secret itself: ``gateway.secrets.resolve_secret`` reads it at start."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    file: Path | None = None
    env: str | None = None
    credential: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretRef:
        given = [n for n in ("file", "env", "credential") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of file, env or credential (never the secret itself)")
        return self
