"""The core data types that flow through edgegw: ``Reading``, ``Command`` and ``Event``.

They are plain slotted dataclasses, built once per message on the hot path, so they do
no validation: config is validated once at load time, payloads are checked by the
device profiles that build these objects. Treat instances as immutable.

Times are UTC seconds since the epoch (``float``), as ``time.time()`` gives them.
Durations inside the engine use the monotonic clock instead (see design.md, "Time").

This module imports nothing else of the project, so every package may import it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple

__all__ = ["Command", "Event", "EventKind", "Origin", "Reading", "Value"]

Value = float | bool | str
"""What a sensor reports: a number, a boolean (contact, motion) or a string (state)."""


@dataclass(slots=True)
class Reading:
    """One value of one sensor. A sensor is addressed as ``device_id/metric``."""

    device_id: str
    metric: str
    value: Value
    ts: float
    """Source time if the device gives one, else receive time (UTC epoch seconds)."""
    received_at: float
    unit: str | None = None
    clock_synced: bool = True
    """False when the gateway's wall clock was not NTP-synchronized at receive time."""

    @property
    def sensor(self) -> str:
        return f"{self.device_id}/{self.metric}"


@dataclass(slots=True)
class Command:
    """A payload for one declared actuator, produced by a rule (or an operator)."""

    actuator: str
    payload: Mapping[str, Any]
    rule_id: str | None
    ts: float


class EventKind(StrEnum):
    FIRED = "fired"
    CLEARED = "cleared"
    EMITTED = "emitted"
    STALE = "stale"


@dataclass(slots=True)
class Event:
    """Something a rule decided: fired, cleared, an ``emit`` action, a stale sensor."""

    kind: EventKind
    rule_id: str
    ts: float
    severity: str = "info"
    message: str = ""
    values: Mapping[str, Value] = field(default_factory=dict)
    """The sensor values that decided it, keyed by ``device/metric``."""


class Origin(NamedTuple):
    """The MQTT QoS 1 message a batch's readings came from: its packet id, a digest of
    what it says, and whether the broker sent it as a redelivery (DUP).

    The pipeline keeps, per packet id, the digest of the last message it committed with
    that id; a DUP message whose id and digest match one committed is the same message
    again (its PUBACK was lost in a crash) and is not taken twice. See
    :mod:`gateway.ledger` for why that is keyed by packet id.
    """

    mid: int
    digest: int
    """64-bit BLAKE2b of packet id, topic (its UTF-8 bytes) and payload, as a signed integer
    (SQLite's INTEGER)."""
    dup: bool = False

    @staticmethod
    def of(topic: str | bytes, payload: bytes, *, mid: int, dup: bool = False) -> Origin:
        raw = topic.encode() if isinstance(topic, str) else topic
        digest = _blake2b(b"".join((mid.to_bytes(2, "big"), raw, b"\0", payload)), digest_size=8).digest()
        return _new_tuple(Origin, (mid, _from_bytes(digest, "big", signed=True), dup))


_blake2b = hashlib.blake2b
_from_bytes = int.from_bytes
_new_tuple = tuple.__new__  # one per MQTT message: skip the NamedTuple's Python-level __new__
