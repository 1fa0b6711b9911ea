"""Deployment and command policy, pure: no I/O, no clock of its own.

Which keys a gateway listens to, which document wins among them, whether a version is
new, which sections a document may hold, and what happens to a command. The agent
(:mod:`gateway.deploy.agent`) carries these decisions out; the tests are table-driven
(``tests/gateway/deploy/test_policy.py``).

- Keys: the gateway id, and ``group/<name>`` for each of its groups (gateway ids cannot
  hold a ``/``, so a group never shadows a gateway).
- Versions are one integer sequence for the whole desired topic (``edgegw deploy`` writes
  the highest version in the topic + 1), so documents under different keys compare.
  The newest version among the gateway's keys wins; on a tie its own key wins.
- A version at or below the highest one already decided (applied, rejected or rolled
  back) is ignored: redelivery, a restart and re-reading the compacted topic change nothing.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "DEPLOYABLE",
    "GROUP_PREFIX",
    "REFUSED",
    "Candidate",
    "CommandVerdict",
    "RemoteCommand",
    "choose",
    "decide_command",
    "digest",
    "is_new",
    "keys_for",
    "parse_command",
    "refused_sections",
]

GROUP_PREFIX = "group/"

DEPLOYABLE = ("version", "rules", "devices", "actuators", "location")
"""The sections a document may hold; each replaces the local config's section."""

REFUSED: dict[str, str] = {
    "bridge": "the spool and the Kafka connection are set in the local config only",
    "gateway": "the gateway id, its groups and the state directory are set in the local config only",
    "http": "the HTTP listener is set in the local config only",
    "mqtt": "the MQTT connection and its credentials are set in the local config only",
    "cloud": "deployment settings are set in the local config only",
    "log": "logging is set in the local config only",
    "include": "rules files are local files: put the rules in the document's rules: list",
}
"""Sections a deployment can never change, with the reason given back to the sender."""


def keys_for(gateway_id: str, groups: Iterable[str]) -> tuple[str, ...]:
    """The record keys this gateway acts on: its own first, then its groups'."""
    return (gateway_id, *(f"{GROUP_PREFIX}{g}" for g in groups))


def digest(raw: bytes) -> str:
    return "sha256:" + hashlib.sha256(raw).hexdigest()


@dataclass(frozen=True, slots=True)
class Candidate:
    """The newest record under one key, as far as its header could be read."""

    key: str
    version: int | None
    """None: no readable integer version (rejected when it is chosen)."""
    raw: bytes
    offset: int = -1

    @property
    def digest(self) -> str:
        return digest(self.raw)


def choose(candidates: Mapping[str, Candidate], keys: tuple[str, ...]) -> Candidate | None:
    """The document to act on: the highest version among ``keys``; ties go to the key
    listed first (the gateway's own). A candidate without a version is chosen only when
    no key has one (it is then rejected, and says why)."""
    best: Candidate | None = None
    for key in keys:
        cand = candidates.get(key)
        if cand is None:
            continue
        if best is None or (cand.version or -1) > (best.version or -1):
            best = cand
    return best


def is_new(version: int | None, decided: int) -> bool:
    """True when ``version`` was not decided yet (None: unreadable, never new twice)."""
    return version is not None and version > decided


def header_version(data: Any) -> int | None:
    """The ``version`` of a parsed document: a positive integer, else None."""
    if not isinstance(data, dict):
        return None
    version = data.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        return None
    return version


def refused_sections(data: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(section, reason)`` for each top-level key a document may not hold."""
    out = []
    for key in data:
        if key in DEPLOYABLE:
            continue
        reason = REFUSED.get(str(key), f"not a deployable section (allowed: {', '.join(DEPLOYABLE)})")
        out.append((str(key), reason))
    return out


# ---------------------------------------------------------------------- commands
@dataclass(frozen=True, slots=True)
class RemoteCommand:
    command_id: str
    actuator: str
    payload: dict[str, Any]
    expires_at: float
    """UTC epoch seconds."""


@dataclass(frozen=True, slots=True)
class CommandVerdict:
    action: Literal["execute", "duplicate", "expired", "refused"]
    reason: str = ""


_COMMAND_FIELDS = frozenset({"command_id", "actuator", "payload", "expires_at", "issued_at", "issued_by"})


def parse_command(  # noqa: PLR0911 - one return per refusal reason
    raw: bytes, max_bytes: int
) -> RemoteCommand | tuple[str | None, str, str | None]:
    """A command record's value, or ``(command_id or None, reason, actuator or None)``."""
    if len(raw) > max_bytes:
        return None, f"command of {len(raw)} bytes is larger than max_command_bytes ({max_bytes})", None
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        return None, "not a JSON object", None
    if not isinstance(data, dict):
        return None, "not a JSON object", None
    command_id = data.get("command_id")
    cid = command_id if isinstance(command_id, str) and 0 < len(command_id) <= 200 else None
    actuator = data.get("actuator")
    act = actuator if isinstance(actuator, str) and actuator else None
    if cid is None:
        return None, "command_id: a non-empty string of at most 200 characters is required", act
    if act is None:
        return cid, "actuator: the id of a declared actuator is required", None
    payload = data.get("payload")
    if not isinstance(payload, dict) or not payload:
        return cid, "payload: a non-empty JSON object is required", act
    expires = data.get("expires_at")
    if isinstance(expires, bool) or not isinstance(expires, int | float) or not math.isfinite(expires):
        why = "expires_at (UTC epoch seconds) is required: a command without one could run days late"
        return cid, why, act
    unknown = sorted(set(data) - _COMMAND_FIELDS)
    if unknown:
        return cid, f"unknown fields: {', '.join(unknown)}", act
    return RemoteCommand(cid, act, payload, float(expires))


def decide_command(
    command: RemoteCommand, *, seen: Container[str], declared: Container[str], now: float
) -> CommandVerdict:
    """What to do with a command at wall-clock time ``now``: a command seen before is a
    duplicate (at most once), an expired one is never executed, an undeclared actuator is
    refused exactly as for rules."""
    if command.command_id in seen:
        return CommandVerdict("duplicate")
    if now >= command.expires_at:
        return CommandVerdict("expired", f"expired {now - command.expires_at:.0f} s before it could run")
    if command.actuator not in declared:
        return CommandVerdict("refused", f"actuator {command.actuator!r} is not declared in the config")
    return CommandVerdict("execute")
