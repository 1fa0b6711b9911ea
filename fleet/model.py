"""The data the projection core takes and gives: plain values, no I/O.

:class:`Incoming` is one Kafka record as the consumer hands it over; :class:`Changes` is
what one batch (and the time tick) does to the read model, already folded: the last
value per sensor, count deltas per device, rollup deltas per sensor and hour. A store
writes a :class:`Changes` and the batch's offsets in one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

__all__ = [
    "Alarm",
    "Changes",
    "CommandRow",
    "DeadLetter",
    "GatewayBeat",
    "GatewaySeen",
    "Incoming",
    "LastValue",
    "RuleDelta",
    "Transition",
]


class Incoming(NamedTuple):
    """One Kafka record. Header values are the raw bytes (None when the header is missing)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    ce_id: bytes | None
    ce_type: bytes | None
    ce_source: bytes | None


class DeadLetter(NamedTuple):
    topic: str
    partition: int
    offset: int
    ce_id: str | None
    ce_type: str | None
    reason: str
    value: str
    """The record's value, truncated to 2,000 characters (for a person to look at)."""


class LastValue(NamedTuple):
    value: str
    """JSON of the value (number, boolean or string)."""
    unit: str | None
    ts: float


class GatewayBeat(NamedTuple):
    """What the newest heartbeat of a gateway in a batch says."""

    ts: float
    version: str | None
    versions: str
    """JSON object of every version the gateway reported."""
    mode: str
    spool_depth: int
    spool_bytes: int
    spool_oldest_age_s: float | None
    spool_dead_letters: int
    spool_dropped: str
    """JSON object: dropped rows by reason."""
    shipped: int
    reconnects: int
    uptime_s: float
    deployment_version: str | None
    bad_input: int | None
    topic: str
    partition: int


class Transition(NamedTuple):
    """A gateway went offline (no heartbeat for the offline delay) or came back online."""

    gateway_id: str
    online: bool
    at: float
    reason: str


class Alarm(NamedTuple):
    active: bool
    severity: str
    message: str
    values: str
    ts: float


class CommandRow(NamedTuple):
    payload: str
    rule_id: str | None
    ts: float
    ce_id: str
    outcome: str


@dataclass(slots=True)
class RuleDelta:
    last_fired: float | None = None
    last_cleared: float | None = None
    last_emitted: float | None = None
    severity: str | None = None
    message: str | None = None
    fires: int = 0


@dataclass(slots=True)
class GatewaySeen:
    """The core's memory of one gateway (loaded from the store on start and assignment)."""

    last_heartbeat: float
    online: bool
    topic: str
    partition: int


@dataclass(slots=True)
class Changes:
    """What a batch changes in the read model (folded; keys are tuples of ids)."""

    dead_letters: list[DeadLetter] = field(default_factory=list)
    beats: dict[str, GatewayBeat] = field(default_factory=dict)
    beat_counts: dict[str, int] = field(default_factory=dict)
    transitions: list[Transition] = field(default_factory=list)
    last_values: dict[tuple[str, str, str], LastValue] = field(default_factory=dict)
    devices: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    """(gateway, device) -> [readings delta, last seen]"""
    rollups: dict[tuple[str, str, str, int], list[float]] = field(default_factory=dict)
    """(gateway, device, metric, hour start) -> [count, min, max, sum]"""
    rules: dict[tuple[str, str], RuleDelta] = field(default_factory=dict)
    fires_per_day: dict[tuple[str, str, str], int] = field(default_factory=dict)
    alarms: dict[tuple[str, str], Alarm] = field(default_factory=dict)
    commands: dict[tuple[str, str], CommandRow] = field(default_factory=dict)
    outcomes: dict[tuple[str, str], tuple[str, float]] = field(default_factory=dict)
    """(gateway, actuator) -> (outcome, ts) from command results (cloud-to-edge commands)"""
    deployments: dict[str, tuple[str, str, float]] = field(default_factory=dict)
    """gateway -> (version, state, ts) from deployment events"""
    bad_input: dict[tuple[str, str], int] = field(default_factory=dict)
    """(gateway, device) -> bad inputs counted by the gateway, when its heartbeat reports them"""
    type_counts: dict[tuple[str, str], int] = field(default_factory=dict)
    """(gateway, ce_type) -> events projected"""
    high_water: dict[tuple[str, str, str], int] = field(default_factory=dict)
    """(ce_id prefix, topic, key) -> the highest spool sequence projected"""
    seen_ids: list[str] = field(default_factory=list)
    """ids that do not end in a spool sequence, projected in this batch"""
    duplicates: int = 0

    def __bool__(self) -> bool:
        return bool(
            self.dead_letters or self.beats or self.transitions or self.last_values or self.devices
            or self.bad_input or self.rules or self.alarms or self.commands or self.outcomes
            or self.deployments or self.type_counts or self.high_water or self.seen_ids
        )  # fmt: skip
