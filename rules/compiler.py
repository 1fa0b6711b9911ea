"""From validated rule models to the plain slotted objects the engine runs.

:func:`compile_rules` checks a list of :class:`~rules.schema.Rule` (duplicate ids,
unknown actuators...) and returns a :class:`RuleSet`. :func:`build` turns a rule set
into fresh runtime objects: one :class:`CompiledRule` per enabled rule, and an index
``device -> metric -> SensorSlot`` so a reading only touches the leaves that watch it.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import ConfigError
from rules.checks import SensorCatalog, check_rules, duplicate_ids
from rules.conditions import (
    ROLE_FAILSAFE,
    ROLE_UNLESS,
    AboveLeaf,
    AllNode,
    AnyNode,
    BelowLeaf,
    EqualsLeaf,
    Leaf,
    Node,
    RangeLeaf,
    StaleLeaf,
    WindowLeaf,
)
from rules.guards import TimeGuard
from rules.loopguard import FireLog
from rules.schema import Action, Condition, Location, Rule

__all__ = ["CompiledRule", "EmitAct", "RuleSet", "SensorSlot", "SetAct", "build", "compile_rules"]


@dataclass(frozen=True, slots=True)
class RuleSet:
    """Checked rules and the location their time guards use. Immutable; share freely."""

    rules: tuple[Rule, ...]
    location: Location = field(default_factory=Location)

    def __len__(self) -> int:
        return len(self.rules)


def compile_rules(
    rules: Sequence[Rule],
    *,
    actuators: Collection[str] | None = None,
    sensors: SensorCatalog | None = None,
    location: Location | None = None,
) -> RuleSet:
    """Check ``rules``; ``actuators=None`` accepts any actuator (as scenarios do).

    Raises :class:`~gateway.errors.ConfigError` with path-only issues.
    """
    issues = duplicate_ids([{"id": rule.id} for rule in rules], set())
    issues += check_rules(rules, actuators=actuators, sensors=sensors, location=location)
    if issues:
        raise ConfigError(issues)
    return RuleSet(tuple(rules), location or Location())


class SetAct:
    __slots__ = ("actuator", "for_s", "key", "payload", "revert")

    def __init__(self, action: Action, key: str) -> None:
        assert action.set is not None
        self.actuator: str = action.set
        self.payload: dict[str, Any] = dict(action.to or {})
        self.for_s = action.for_
        self.revert: dict[str, Any] | None = dict(action.revert) if action.revert else None
        self.key = key  # "then[0]": names a pending revert in snapshots


class EmitAct:
    __slots__ = ("message", "severity")

    def __init__(self, action: Action) -> None:
        assert action.emit is not None
        self.severity = action.emit.severity
        self.message = action.emit.message


Act = SetAct | EmitAct


class SensorSlot:
    """What the engine knows of one sensor: the leaves that watch it, when it last spoke."""

    __slots__ = ("last_seen", "leaves", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self.leaves: list[Leaf] = []
        self.last_seen: float | None = None


class CompiledRule:
    """One rule's definition (compiled) and its runtime state."""

    __slots__ = (
        "bad_readings",
        "blocked",
        "cooldown",
        "description",
        "else_",
        "failsafe_active",
        "failsafe_leaves",
        "failsafe_then",
        "fingerprint",
        "fired",
        "fires",
        "for_s",
        "guard",
        "id",
        "last_fire",
        "loop_trips",
        "max_fpm",
        "met",
        "pending_due",
        "pending_gen",
        "reverts",
        "then",
        "trace",
        "unless",
        "unless_leaves",
        "when",
        "when_leaves",
        "when_met",
    )

    def __init__(self, rule: Rule, location: Location) -> None:
        self.id = rule.id
        self.description = rule.description
        self.fingerprint = hashlib.sha256(
            rule.model_dump_json(by_alias=True).encode()
        ).hexdigest()[:16]
        self.when: Node = _node(rule.when)
        self.when_leaves = self.when.leaves()
        self.unless: Node | None = _node(rule.unless) if rule.unless is not None else None
        self.unless_leaves = self.unless.leaves() if self.unless is not None else []
        for leaf in self.unless_leaves:
            leaf.role = ROLE_UNLESS
        self.guard = TimeGuard(rule.during, location) if rule.during is not None else None
        self.for_s = rule.when.for_ or 0.0
        self.cooldown = rule.cooldown
        self.max_fpm = rule.max_fires_per_minute
        self.then: list[Act] = [_act(a, f"then[{i}]") for i, a in enumerate(rule.then)]
        self.else_: list[Act] = [_act(a, f"else[{i}]") for i, a in enumerate(rule.else_)]
        self.failsafe_then: list[Act] = []
        self.failsafe_leaves: list[StaleLeaf] = []
        if rule.failsafe is not None:
            self.failsafe_then = [
                _act(a, f"failsafe.then[{i}]") for i, a in enumerate(rule.failsafe.then)
            ]
            for sensor in sorted({leaf.sensor for leaf in self.when_leaves}):
                leaf = StaleLeaf(sensor, f"{sensor} stale", rule.failsafe.after)
                leaf.role = ROLE_FAILSAFE
                self.failsafe_leaves.append(leaf)
        for leaf in self.all_leaves():
            leaf.rule = self
        # runtime state
        self.met = False  # the effective condition: when, not unless, inside `during`
        self.when_met = False
        self.blocked = False  # `when` met but held off by unless/during
        self.fired = False
        self.pending_due: float | None = None  # monotonic time a `for` wait ends
        self.pending_gen = 0
        self.last_fire: float | None = None
        self.fires = FireLog(self.max_fpm)
        self.reverts: dict[str, list[Any]] = {}  # key -> [due, gen, actuator, payload]
        self.failsafe_active = False
        self.bad_readings = 0
        self.loop_trips = 0
        self.trace: dict[str, deque[dict[str, Any]]] = {}

    def all_leaves(self) -> list[Leaf]:
        return [*self.when_leaves, *self.unless_leaves, *self.failsafe_leaves]

    def values(self) -> dict[str, Any]:
        """The values that decide this rule now, keyed by sensor (or window label)."""
        return {
            leaf.label: leaf.value
            for leaf in (*self.when_leaves, *self.unless_leaves)
            if leaf.known and not isinstance(leaf, StaleLeaf)
        }


def _act(action: Action, key: str) -> Act:
    return SetAct(action, key) if action.set is not None else EmitAct(action)


def _threshold(cond: Condition, sensor: str, label: str) -> Leaf:
    h = cond.hysteresis
    if cond.equals is not None:
        return EqualsLeaf(sensor, label, cond.equals)
    if cond.between is not None:
        return RangeLeaf(sensor, label, cond.between[0], cond.between[1], h, strict=False)
    if cond.above is not None and cond.below is not None:
        return RangeLeaf(sensor, label, cond.above, cond.below, h, strict=True)
    if cond.above is not None:
        return AboveLeaf(sensor, label, cond.above, h)
    assert cond.below is not None
    return BelowLeaf(sensor, label, cond.below, h)


def _node(cond: Condition) -> Node:
    if cond.all is not None:
        return AllNode([_node(child) for child in cond.all])
    if cond.any is not None:
        return AnyNode([_node(child) for child in cond.any])
    assert cond.sensor is not None
    if cond.stale is not None:
        return StaleLeaf(cond.sensor, f"{cond.sensor} stale", cond.stale)
    for func in ("avg", "min", "max", "rate"):
        window: float | None = getattr(cond, func)
        if window is not None:
            return WindowLeaf(_threshold(cond, cond.sensor, cond.sensor), func, window)
    return _threshold(cond, cond.sensor, cond.sensor)


def build(ruleset: RuleSet) -> tuple[list[CompiledRule], dict[str, dict[str, SensorSlot]]]:
    """Fresh runtime objects for the enabled rules, and the sensor index."""
    compiled = [CompiledRule(rule, ruleset.location) for rule in ruleset.rules if rule.enabled]
    index: dict[str, dict[str, SensorSlot]] = {}
    for rule in compiled:
        for leaf in rule.all_leaves():
            device, metric = leaf.sensor.split("/", 1)
            slot = index.setdefault(device, {}).get(metric)
            if slot is None:
                slot = index[device][metric] = SensorSlot(leaf.sensor)
            slot.leaves.append(leaf)
            if isinstance(leaf, StaleLeaf):
                leaf.slot = slot
    return compiled, index
