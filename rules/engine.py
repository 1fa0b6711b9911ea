"""The rules engine: readings and clock ticks in, commands and events out. Pure.

::

    engine = RuleEngine(ruleset, Now(time.monotonic(), time.time()))
    actions = engine.on_reading(reading, now)   # list[Command | Event]
    actions = engine.tick(now)                  # `for` waits, reverts, stale, guards
    engine.next_deadline()                      # monotonic time of the next timer

A rule fires when its condition (``when``, not ``unless``, inside ``during``) goes from
not met to met, after ``for`` if given, unless its cooldown or its loop guard
(``max_fires_per_minute``) drops the fire; it clears (``else``) when the condition stops
being met after a fire. See docs/rules.md for the full semantics.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import structlog

from gateway.model import Command, Event, EventKind, Reading
from rules.clock import Now
from rules.compiler import Act, CompiledRule, SetAct, build
from rules.conditions import BAD, ROLE_FAILSAFE, Leaf, StaleLeaf
from rules.durations import format_duration

if TYPE_CHECKING:
    from rules.compiler import RuleSet, SensorSlot

__all__ = ["TRACE_DEPTH", "Action", "EngineStats", "RuleEngine"]

Action = Command | Event
TRACE_DEPTH = 5
"""Evaluations kept per rule and outcome in the trace."""

_FOR, _REVERT, _STALE, _GUARD = range(4)
_Timer = tuple[float, int, int, Any, str, int]  # due, seq, kind, rule/leaf, key, gen


@dataclass(slots=True)
class EngineStats:
    readings: int = 0
    unmatched: int = 0  # readings of sensors no rule reads
    bad_readings: int = 0
    fires: int = 0
    clears: int = 0
    blocked_by_cooldown: int = 0
    blocked_by_guard: int = 0
    loop_guard_trips: int = 0
    failsafes: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class RuleEngine:
    """Runs a :class:`~rules.compiler.RuleSet`. Not thread-safe: feed it from one task."""

    def __init__(self, ruleset: RuleSet, now: Now, *, logger: Any = None) -> None:
        self.ruleset = ruleset
        self.rules, self._index = build(ruleset)
        self._by_id = {rule.id: rule for rule in self.rules}
        self._heap: list[_Timer] = []
        self._seq = itertools.count()
        self._gen = itertools.count(1)
        self._start = now.mono
        self._dirty: set[CompiledRule] = set()
        """Rules whose state changed since :meth:`take_changes` (readings or timers). A reading
        that only changes a threshold leaf's ``value`` does not count: the row keeps the value
        it was last written with (the one that decided its flags, or a later one)."""
        self.stats = EngineStats()
        self._log = logger if logger is not None else structlog.get_logger("edgegw.rules")
        self.rebuild_timers(now)

    # ------------------------------------------------------------------ input
    def on_reading(self, reading: Reading, now: Now) -> list[Action]:
        out: list[Action] = []
        heap = self._heap
        if heap and heap[0][0] <= now.mono:
            self._run_timers(now, out)
        self.stats.readings += 1
        metrics = self._index.get(reading.device_id)
        slot = metrics.get(reading.metric) if metrics is not None else None
        if slot is None:
            self.stats.unmatched += 1
            return out
        slot.last_seen = now.mono
        value = reading.value
        mono = now.mono
        dirty = self._dirty
        for leaf in slot.leaves:
            known = leaf.known
            result = leaf.update(value, mono)
            # A rule's row is due when what a restart resumes from changed: not for a new
            # value that changed no flag (most readings; the spool writes each row it gets).
            if result or not known or leaf.keeps_samples:
                dirty.add(leaf.rule)  # type: ignore[arg-type]
            if result:
                if result == BAD:
                    self._bad(leaf, reading)
                else:
                    self._leaf_changed(leaf, now, out)
        return out

    def tick(self, now: Now) -> list[Action]:
        """Run every timer due at or before ``now`` (each at its own due time)."""
        out: list[Action] = []
        self._run_timers(now, out)
        return out

    def next_deadline(self) -> float | None:
        """Monotonic time of the earliest pending timer (some may be cancelled ones)."""
        return self._heap[0][0] if self._heap else None

    # ------------------------------------------------------------------ introspection
    def rule(self, rule_id: str) -> CompiledRule:
        return self._by_id[rule_id]

    def trace(self, rule_id: str) -> dict[str, Any]:
        """The last evaluations of a rule per outcome, with the values that decided."""
        rule = self._by_id[rule_id]
        return {
            "rule": rule.id,
            "fired": rule.fired,
            "met": rule.met,
            "bad_readings": rule.bad_readings,
            "loop_guard_trips": rule.loop_trips,
            "outcomes": {k: list(v) for k, v in rule.trace.items()},
        }

    def traces(self) -> dict[str, dict[str, Any]]:
        return {rule.id: self.trace(rule.id) for rule in self.rules}

    # ------------------------------------------------------------------ timers
    def _push(self, due: float, kind: int, obj: Any, key: str = "", gen: int = 0) -> None:
        heapq.heappush(self._heap, (due, next(self._seq), kind, obj, key, gen))

    def rebuild_timers(self, now: Now) -> None:
        """Recreate every timer from the rules' state (at start and after a restore)."""
        self._heap.clear()
        for rule in self.rules:
            if rule.pending_due is not None:
                self._push(rule.pending_due, _FOR, rule, gen=rule.pending_gen)
            for key, entry in rule.reverts.items():
                self._push(entry[0], _REVERT, rule, key, entry[1])
            for leaf in rule.all_leaves():
                if isinstance(leaf, StaleLeaf) and not leaf.met:
                    self._push(self._stale_due(leaf), _STALE, leaf)
            if rule.guard is not None:
                self._push_guard(rule, now)

    def _stale_due(self, leaf: StaleLeaf) -> float:
        seen = leaf.slot.last_seen
        return (self._start if seen is None else seen) + leaf.after

    def _push_guard(self, rule: CompiledRule, now: Now) -> None:
        assert rule.guard is not None
        due = now.mono + (rule.guard.next_change(now.wall) - now.wall)
        self._push(max(due, now.mono + 1e-6), _GUARD, rule)

    def _run_timers(self, now: Now, out: list[Action]) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now.mono:
            due, _, kind, obj, key, gen = heapq.heappop(heap)
            self._dirty.add(obj.rule if kind == _STALE else obj)
            at = Now(due, now.wall - (now.mono - due))
            if kind == _FOR:
                if obj.pending_due is not None and obj.pending_gen == gen:
                    obj.pending_due = None
                    self._fire(obj, at, out)
            elif kind == _REVERT:
                entry = obj.reverts.get(key)
                if entry is not None and entry[1] == gen:
                    del obj.reverts[key]
                    out.append(Command(entry[2], dict(entry[3]), obj.id, at.wall))
            elif kind == _STALE:
                if obj.met:
                    continue
                stale_due = self._stale_due(obj)
                if stale_due <= due:
                    obj.met = obj.known = True
                    self._leaf_changed(obj, at, out)
                else:
                    self._push(stale_due, _STALE, obj)
            else:
                self._evaluate(obj, at, out)
                self._push_guard(obj, at)

    # ------------------------------------------------------------------ evaluation
    def _bad(self, leaf: Leaf, reading: Reading) -> None:
        rule: CompiledRule = leaf.rule  # type: ignore[assignment]
        rule.bad_readings += 1
        self.stats.bad_readings += 1
        count = rule.bad_readings
        if count & (count - 1) == 0:  # 1st, 2nd, 4th, 8th...: loud first, then quieter
            self._log.warning(
                "bad reading skipped",
                rule=rule.id,
                sensor=leaf.sensor,
                value=repr(reading.value)[:80],
                count=count,
            )

    def _leaf_changed(self, leaf: Leaf, now: Now, out: list[Action]) -> None:
        if isinstance(leaf, StaleLeaf) and not leaf.met:
            self._push(now.mono + leaf.after, _STALE, leaf)
        rule: CompiledRule = leaf.rule  # type: ignore[assignment]
        if leaf.role == ROLE_FAILSAFE:
            self._failsafe(rule, leaf, now, out)
        else:
            self._evaluate(rule, now, out)

    def _evaluate(self, rule: CompiledRule, now: Now, out: list[Action]) -> None:
        when_met = rule.when.truth()
        held = ""
        if when_met:
            if rule.unless is not None and rule.unless.truth():
                held = "unless"
            elif rule.guard is not None and not rule.guard.is_open(now.wall):
                held = f"outside during ({rule.guard.text})"
        rule.when_met = when_met
        if held and not rule.blocked:
            self.stats.blocked_by_guard += 1
            self._trace(rule, "blocked_by_guard", now, held)
        rule.blocked = bool(held)
        met = when_met and not held
        if met is rule.met:
            return
        rule.met = met
        if met:
            if rule.for_s > 0:
                rule.pending_due = now.mono + rule.for_s
                rule.pending_gen = next(self._gen)
                self._push(rule.pending_due, _FOR, rule, gen=rule.pending_gen)
            else:
                self._fire(rule, now, out)
            return
        rule.pending_due = None
        if rule.fired:
            rule.fired = False
            self.stats.clears += 1
            values = rule.values()
            self._trace(rule, "cleared", now, values=values)
            out.append(Event(EventKind.CLEARED, rule.id, now.wall, values=values))
            self._run(rule, rule.else_, now, out, values)

    def _fire(self, rule: CompiledRule, now: Now, out: list[Action]) -> None:
        mono = now.mono
        if rule.last_fire is not None and mono < rule.last_fire + rule.cooldown:
            self.stats.blocked_by_cooldown += 1
            left = format_duration(rule.last_fire + rule.cooldown - mono)
            self._trace(rule, "blocked_by_cooldown", now, f"cooldown ends in {left}")
            return
        fires = rule.fires
        last_minute = fires.in_last_minute(mono)
        if last_minute >= rule.max_fpm:
            rule.loop_trips += 1
            self.stats.loop_guard_trips += 1
            self._log.warning(
                "rule loop guard tripped: fire dropped",
                rule=rule.id,
                fires_last_minute=last_minute,
                limit=rule.max_fpm,
                trips=rule.loop_trips,
            )
            self._trace(rule, "blocked_by_loop_guard", now, f"{last_minute} fires in the last minute")
            return
        fires.add(mono)
        rule.last_fire = mono
        rule.fired = True
        self.stats.fires += 1
        values = rule.values()
        self._trace(rule, "fired", now, values=values)
        out.append(Event(EventKind.FIRED, rule.id, now.wall, message=rule.description, values=values))
        self._run(rule, rule.then, now, out, values)

    def _failsafe(self, rule: CompiledRule, leaf: Leaf, now: Now, out: list[Action]) -> None:
        if not leaf.met:
            if rule.failsafe_active and not any(f.met for f in rule.failsafe_leaves):
                rule.failsafe_active = False
                self._log.info("sensor back online, rule re-armed", rule=rule.id, sensor=leaf.sensor)
            return
        if rule.failsafe_active:
            return
        rule.failsafe_active = True
        self.stats.failsafes += 1
        after = format_duration(leaf.after)  # type: ignore[attr-defined]
        message = f"{leaf.sensor} sent no data for {after}: fail-safe"
        self._log.warning("sensor stale, fail-safe actions run", rule=rule.id, sensor=leaf.sensor)
        self._trace(rule, "failsafe", now, message)
        out.append(Event(EventKind.STALE, rule.id, now.wall, severity="warning", message=message))
        self._run(rule, rule.failsafe_then, now, out, {})
        # The rule starts over: the next reading that meets the condition fires again.
        rule.pending_due = None
        rule.fired = rule.met = rule.when_met = rule.blocked = False
        for other in (*rule.when_leaves, *rule.unless_leaves):
            if other.sensor == leaf.sensor and not isinstance(other, StaleLeaf):
                other.reset()

    def _run(
        self, rule: CompiledRule, acts: list[Act], now: Now, out: list[Action], values: dict[str, Any]
    ) -> None:
        for act in acts:
            if isinstance(act, SetAct):
                out.append(Command(act.actuator, dict(act.payload), rule.id, now.wall))
                if act.for_s is not None:
                    gen = next(self._gen)
                    due = now.mono + act.for_s
                    rule.reverts[act.key] = [due, gen, act.actuator, act.revert]
                    self._push(due, _REVERT, rule, act.key, gen)
            else:
                out.append(
                    Event(
                        EventKind.EMITTED,
                        rule.id,
                        now.wall,
                        severity=act.severity,
                        message=act.message,
                        values=values,
                    )
                )

    def _trace(
        self,
        rule: CompiledRule,
        outcome: str,
        now: Now,
        detail: str = "",
        values: dict[str, Any] | None = None,
    ) -> None:
        entries = rule.trace.get(outcome)
        if entries is None:
            entries = rule.trace[outcome] = deque(maxlen=TRACE_DEPTH)
        entry: dict[str, Any] = {"at": now.wall, "values": values if values is not None else rule.values()}
        if detail:
            entry["detail"] = detail
        entries.append(entry)

    # ------------------------------------------------------------------ state
    def slots(self) -> dict[str, SensorSlot]:
        return {slot.name: slot for metrics in self._index.values() for slot in metrics.values()}

    def snapshot(self, now: Now) -> dict[str, Any]:
        """Rule state as plain data (JSON-able), see :mod:`rules.state`."""
        from rules.state import snapshot  # noqa: PLC0415

        return snapshot(self, now)

    def take_changes(self, now: Now) -> dict[str, Any] | None:
        """The state of every rule that changed since the last call, as plain data keyed
        ``rule:<id>`` (see :func:`rules.state.rule_entries`), or None when none did.

        The runtime commits it in the same spool transaction as the readings that changed
        it, so the state a restart resumes from always matches the acknowledged readings.
        """
        if not self._dirty:
            return None
        from rules.state import rule_entries  # noqa: PLC0415

        dirty, self._dirty = self._dirty, set()
        return rule_entries(dirty, now)

    def mark_all_changed(self) -> None:
        """Make the next :meth:`take_changes` return every rule (after a restore or reload)."""
        self._dirty.update(self.rules)

    def with_rules(self, ruleset: RuleSet, now: Now) -> RuleEngine:
        """A new engine for ``ruleset`` (a reload) carrying the state of unchanged rules."""
        engine = RuleEngine(ruleset, now, logger=self._log)
        engine._start = self._start  # never-seen sensors keep their stale deadline
        engine.restore(self.snapshot(now), now)
        return engine

    def restore(self, data: dict[str, Any], now: Now) -> None:
        """Load a :meth:`snapshot` taken earlier, accounting for the time that passed."""
        from rules.state import restore  # noqa: PLC0415

        restore(self, data, now)
