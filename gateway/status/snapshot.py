"""The status document (``/api/status``) from plain copies of what the runtime knows. Pure.

:mod:`gateway.status.page` copies the runtime's counters into the views below on the
event loop (dictionary reads, nothing more) and hands them to :func:`build_status` in a
worker thread; tests build the views by hand. Times are wall-clock epoch seconds (the
page shows them as "12 s ago"); what was measured on the monotonic clock is converted
when copied.

Rule states, in the order they are decided:

- ``stale``: its fail-safe ran, or a device it reads is offline;
- ``held by guard``: the condition is met but ``unless`` or ``during`` holds it back;
- ``fired``: it fired and has not cleared;
- ``waiting on for``: the condition is met and ``for`` is running;
- ``cooling down``: it fired and cleared, and its cooldown has not run out;
- ``idle``: none of these.

No secret is ever part of the inputs: the config appears as its path and a fingerprint.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ActuatorView",
    "DeviceView",
    "LinkView",
    "RuleView",
    "StatusInputs",
    "build_status",
    "rule_state",
]


@dataclass(frozen=True, slots=True)
class LinkView:
    up: bool | None
    """None: not configured."""
    state: str
    since: float | None = None
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class DeviceView:
    id: str
    profile: str
    transport: str
    state: str
    """online, offline or unknown (never heard from since start)."""
    last_seen: float | None
    messages: int
    values: Mapping[str, tuple[Any, float]]
    """metric -> (last value, its time)."""
    bad_input: Mapping[str, int] = field(default_factory=dict)
    """reason -> messages refused."""


@dataclass(frozen=True, slots=True)
class RuleView:
    id: str
    description: str
    fired: bool
    met: bool
    blocked: bool
    waiting_until: float | None
    """When a running ``for`` ends."""
    cooldown_until: float | None
    last_fired: float | None
    failsafe_active: bool
    devices: tuple[str, ...]
    """The devices whose sensors it reads."""
    fires: int
    trace: Mapping[str, Any]
    """:meth:`rules.RuleEngine.trace`: what ``edgegw rules explain`` prints."""
    emits: bool = False


@dataclass(frozen=True, slots=True)
class ActuatorView:
    id: str
    profile: str
    transport: str
    payload: Mapping[str, Any] | None
    at: float | None
    rule_id: str | None
    outcome: str | None
    sent: int = 0
    failed: int = 0
    confirmed: int = 0
    unconfirmed: int = 0


@dataclass(frozen=True, slots=True)
class StatusInputs:
    gateway_id: str
    version: str
    now: float
    started: float
    config: Mapping[str, Any]
    links: Mapping[str, LinkView]
    spool: Mapping[str, Any] | None
    clock_synced: bool
    healthy: bool
    devices: Sequence[DeviceView]
    rules: Sequence[RuleView]
    actuators: Sequence[ActuatorView]
    events: Sequence[Mapping[str, Any]]
    """The last rule events, oldest first: at, kind, rule, severity, message, values."""
    bad_input: Sequence[Mapping[str, Any]]
    """The last bad-input log lines, oldest first: at, device, reason, detail, suppressed."""
    uplink: Mapping[str, Any] | None = None
    """The Kafka uplink's process (state, pid, restarts, last_exit, rss_bytes); None without Kafka."""


def rule_state(rule: RuleView, now: float, offline: frozenset[str] | set[str]) -> str:
    """See the module docstring."""
    if rule.failsafe_active or any(device in offline for device in rule.devices):
        return "stale"
    if rule.blocked:
        return "held by guard"
    if rule.fired:
        return "fired"
    if rule.met and rule.waiting_until is not None:
        return "waiting on for"
    if rule.cooldown_until is not None and now < rule.cooldown_until:
        return "cooling down"
    return "idle"


def _device(view: DeviceView) -> dict[str, Any]:
    return {
        "id": view.id,
        "profile": view.profile,
        "transport": view.transport,
        "state": view.state,
        "last_seen": view.last_seen,
        "messages": view.messages,
        "values": [{"metric": m, "value": v, "at": ts} for m, (v, ts) in sorted(view.values.items())],
        "bad_input": dict(sorted(view.bad_input.items())),
        "bad_input_total": sum(view.bad_input.values()),
    }


def _rule(view: RuleView, now: float, offline: set[str]) -> dict[str, Any]:
    return {
        "id": view.id,
        "description": view.description,
        "state": rule_state(view, now, offline),
        "condition_met": view.met,
        "last_fired": view.last_fired,
        "fires": view.fires,
        "waiting_until": view.waiting_until if view.met else None,
        "cooldown_until": view.cooldown_until,
        "emits": view.emits,
        "explain": dict(view.trace),
    }


def _actuator(view: ActuatorView) -> dict[str, Any]:
    return {
        "id": view.id,
        "profile": view.profile,
        "transport": view.transport,
        "last_command": None if view.payload is None else dict(view.payload),
        "at": view.at,
        "rule": view.rule_id,
        "outcome": view.outcome,
        "confirmed": {"confirmed": True, "unconfirmed": False}.get(view.outcome or ""),
        "counts": {"sent": view.sent, "failed": view.failed, "confirmed": view.confirmed,
                   "unconfirmed": view.unconfirmed},
    }


def build_status(inputs: StatusInputs) -> dict[str, Any]:
    """The document ``/api/status`` serves (JSON-able)."""
    now = inputs.now
    offline = {d.id for d in inputs.devices if d.state == "offline"}
    devices = [_device(d) for d in inputs.devices]
    rules = [_rule(r, now, offline) for r in inputs.rules]
    states: dict[str, int] = {}
    for device in devices:
        states[device["state"]] = states.get(device["state"], 0) + 1
    rule_states: dict[str, int] = {}
    for rule in rules:
        rule_states[rule["state"]] = rule_states.get(rule["state"], 0) + 1
    links = {
        name: {"up": link.up, "state": link.state, "since": link.since, "detail": link.detail}
        for name, link in inputs.links.items()
    }
    return {
        "gateway": {
            "id": inputs.gateway_id,
            "version": inputs.version,
            "now": now,
            "started": inputs.started,
            "uptime_s": max(0.0, now - inputs.started),
            "healthy": inputs.healthy,
            "config": dict(inputs.config),
            "links": links,
            "spool": None if inputs.spool is None else dict(inputs.spool),
            "uplink": None if inputs.uplink is None else dict(inputs.uplink),
            "clock_synced": inputs.clock_synced,
        },
        "summary": {"devices": states, "rules": rule_states},
        "devices": devices,
        "rules": rules,
        "actuators": [_actuator(a) for a in inputs.actuators],
        "events": [dict(e) for e in inputs.events],
        "bad_input": [dict(b) for b in inputs.bad_input],
    }
