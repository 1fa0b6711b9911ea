"""Rule state to and from plain data, so it survives a restart.

A snapshot holds, per rule: the condition and fired flags, the pending ``for`` wait,
pending timed reverts, the cooldown and loop-guard history, each leaf's latch and
window contents, counters and the trace; and when each sensor last spoke. Times are
stored as ages or remaining durations relative to the snapshot, together with its wall
time, because the monotonic clock restarts with the machine. On restore, the wall
time that passed is taken off every remaining duration (a revert due during the
downtime runs at the first tick); if the wall clock went backwards, no time passed.

Rules are matched by id and a fingerprint of their definition: the state of a rule
whose definition changed is dropped (it starts fresh). The downtime does not count
against a sensor's silence (the gateway could not hear it): a sensor silent for 4 of
its 10 ``stale`` minutes at the snapshot goes stale 6 minutes after the restore. A
reload (snapshot and restore in the same process) therefore changes no timer at all.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from gateway.errors import RuleError
from rules.conditions import WindowLeaf
from rules.engine import TRACE_DEPTH

if TYPE_CHECKING:
    from rules.clock import Now
    from rules.compiler import CompiledRule
    from rules.engine import RuleEngine

__all__ = ["SCHEMA_VERSION", "entries_of", "from_entries", "migrate", "restore", "rule_entries", "snapshot",
           "summary_entry"]

SCHEMA_VERSION = 1


def _rule_state(rule: CompiledRule, mono: float, *, on_clock: bool = False) -> dict[str, Any]:
    """One rule's state without its trace (what changes with every reading it reads).

    Times are ages (``*_ago``, window items) and remaining durations (``*_in``) at ``mono``;
    ``on_clock``: the monotonic clock's readings themselves (when it happened, when it falls
    due), which stay the same from one row to the next (see :func:`rule_entries`). Lists are
    copied as they are: a loop guard holds hundreds of fire times, and a Python call per
    item cost more than the rest of the row."""
    ref = 0.0 if on_clock else mono  # remaining = due - ref: on the clock, the due time itself
    last = rule.last_fire
    leaves = []
    for leaf in rule.all_leaves():
        item: dict[str, Any] = {"met": leaf.met, "known": leaf.known, "value": leaf.value}
        if isinstance(leaf, WindowLeaf):
            item["items"] = ([[t, v] for t, v in leaf.items] if on_clock
                             else [[mono - t, v] for t, v in leaf.items])  # fmt: skip
            item["inner_met"] = leaf.inner.met
        leaves.append(item)
    fires = rule.fires
    state = {
        "fingerprint": rule.fingerprint,
        "met": rule.met,
        "when_met": rule.when_met,
        "blocked": rule.blocked,
        "fired": rule.fired,
        "failsafe_active": rule.failsafe_active,
        "pending_in": None if rule.pending_due is None else rule.pending_due - ref,
        "last_fire_ago": None if last is None else last if on_clock else mono - last,
        "fires_ago": list(fires.times) if on_clock else [mono - t for t in fires.times],
        "reverts": {
            key: {"in": due - ref, "actuator": actuator, "payload": payload}
            for key, (due, _gen, actuator, payload) in rule.reverts.items()
        },
        "leaves": leaves,
        "bad_readings": rule.bad_readings,
        "loop_guard_trips": rule.loop_trips,
    }
    if fires.coarse:  # fires joined in runs: how many each (a row without it: one each)
        state["fire_counts"] = list(fires.counts)
    return state


def _to_ages(state: dict[str, Any], clock: float) -> dict[str, Any]:
    """A row's times on the clock (it read ``clock`` when the row was taken) as the ages and
    remaining durations :func:`restore` reads."""
    out = dict(state)
    due = out["pending_in"]
    out["pending_in"] = None if due is None else due - clock
    last = out["last_fire_ago"]
    out["last_fire_ago"] = None if last is None else clock - last
    out["fires_ago"] = [clock - t for t in out["fires_ago"]]
    out["reverts"] = {key: {**r, "in": r["in"] - clock} for key, r in out["reverts"].items()}
    out["leaves"] = [
        {**item, "items": [[clock - t, v] for t, v in item["items"]]} if "items" in item else item
        for item in out["leaves"]
    ]
    return out


def snapshot(engine: RuleEngine, now: Now) -> dict[str, Any]:
    mono = now.mono
    rules: dict[str, Any] = {}
    for rule in engine.rules:
        state = _rule_state(rule, mono)
        state["trace"] = {k: list(v) for k, v in rule.trace.items()}
        rules[rule.id] = state
    return {
        "version": SCHEMA_VERSION,
        "wall": now.wall,
        "rules": rules,
        "sensors": _sensors(engine, mono),
        "stats": engine.stats.as_dict(),
    }


def _sensors(engine: RuleEngine, mono: float) -> dict[str, Any]:
    return {
        name: {"seen_ago": mono - slot.last_seen}
        for name, slot in engine.slots().items()
        if slot.last_seen is not None
    }


RULE_PREFIX = "rule:"
CLOCK_KEY = "clock"
EPOCH_KEY = "epoch"
SUMMARY_KEY = "summary"


def rule_entries(rules: Iterable[CompiledRule], now: Now) -> dict[str, Any]:
    """``{"rule:<id>": state}`` for ``rules``, each stamped with the wall time it was taken
    at: the rows the spool keeps, one per rule, overwritten as the rule changes.

    A row holds its times as the monotonic clock read them, with that clock's reading when
    the row was taken (``clock``), not as ages: a fire, a pending wait or a window sample then
    keeps its value from row to row, and a row taken for a new reading differs from the last
    one in ``leaves`` and ``clock`` only. The wall time it was taken at is ``epoch`` +
    ``clock``: ``epoch``, the wall time at the clock's zero (to 10 ms), moves only when the
    wall clock is set (NTP), so it costs no bytes from row to row. The spool logs what
    changed (SD-card wear: ages made every row new, and a loop guard's fire history grew
    each one). Times are kept to the millisecond. :func:`from_entries` turns them back into
    ages and a wall time."""
    mono = now.mono
    epoch = round(now.wall - mono, 2)
    out: dict[str, Any] = {}
    for rule in rules:
        state = _rule_state(rule, mono, on_clock=True)
        state[CLOCK_KEY] = round(mono, 3)  # to the millisecond: the digits after it only cost bytes
        state[EPOCH_KEY] = epoch
        out[RULE_PREFIX + rule.id] = state
    return out


def summary_entry(engine: RuleEngine, now: Now) -> dict[str, Any]:
    """``{"summary": ...}``: what may lag behind the readings by a few seconds (traces, when
    each sensor last spoke, counters); written periodically and at stop."""
    return {
        SUMMARY_KEY: {
            "version": SCHEMA_VERSION,
            "wall": now.wall,
            "sensors": _sensors(engine, now.mono),
            "stats": engine.stats.as_dict(),
            "traces": {rule.id: {k: list(v) for k, v in rule.trace.items()} for rule in engine.rules},
        }
    }


def entries_of(data: dict[str, Any]) -> dict[str, Any]:
    """A whole :func:`snapshot` (the legacy JSON file) turned into spool rows."""
    data = migrate(data)
    out: dict[str, Any] = {}
    traces: dict[str, Any] = {}
    for rule_id, saved in data["rules"].items():
        state = dict(saved)
        traces[rule_id] = state.pop("trace", {})
        state["wall"] = data["wall"]
        out[RULE_PREFIX + rule_id] = state
    out[SUMMARY_KEY] = {"version": SCHEMA_VERSION, "wall": data["wall"], "sensors": data.get("sensors", {}),
                        "stats": data.get("stats", {}), "traces": traces}  # fmt: skip
    return out


def from_entries(entries: dict[str, Any]) -> dict[str, Any] | None:
    """The spool's rows back into one snapshot for :func:`restore` (None when there are none).
    Each rule keeps its own wall time; its trace comes from the summary."""
    summary = entries.get(SUMMARY_KEY) or {}
    traces = summary.get("traces", {})
    rules: dict[str, Any] = {}
    walls = []
    for key, row in entries.items():
        if not key.startswith(RULE_PREFIX):
            continue
        rule_id = key[len(RULE_PREFIX):]
        state = dict(row)
        if CLOCK_KEY in state:  # this version's rows; earlier ones hold ages and the wall time
            clock = float(state.pop(CLOCK_KEY))
            if EPOCH_KEY in state:
                state["wall"] = float(state.pop(EPOCH_KEY)) + clock
            state = _to_ages(state, clock)
        state.setdefault("trace", traces.get(rule_id, {}))
        rules[rule_id] = state
        walls.append(float(state.get("wall", 0.0)))
    if not rules and not summary:
        return None
    return {
        "version": SCHEMA_VERSION,
        "wall": float(summary.get("wall", max(walls, default=0.0))),
        "rules": rules,
        "sensors": summary.get("sensors", {}),
        "stats": summary.get("stats", {}),
    }


_MIGRATIONS: dict[int, Any] = {}
"""version -> function turning a snapshot of that version into the next one."""


def migrate(data: dict[str, Any]) -> dict[str, Any]:
    """Bring a snapshot to :data:`SCHEMA_VERSION`; a newer or unknown one is a RuleError."""
    version = data.get("version")
    if not isinstance(version, int):
        raise RuleError("rule state snapshot without a schema version")
    while version < SCHEMA_VERSION:
        step = _MIGRATIONS.get(version)
        if step is None:
            raise RuleError(f"cannot migrate rule state from schema version {version}")
        data = step(data)
        version = data["version"]
    if version > SCHEMA_VERSION:
        raise RuleError(
            f"rule state has schema version {version}, newer than this edgegw ({SCHEMA_VERSION})"
        )
    return data


def restore(engine: RuleEngine, data: dict[str, Any], now: Now) -> None:
    data = migrate(data)
    mono = now.mono
    elapsed = max(0.0, now.wall - float(data["wall"]))
    restored = 0
    for rule in engine.rules:
        saved = data["rules"].get(rule.id)
        if saved is None or saved.get("fingerprint") != rule.fingerprint:
            continue
        restored += 1
        if "wall" in saved:  # a row of its own (the spool's): taken at its own time
            elapsed = max(0.0, now.wall - float(saved["wall"]))
        else:
            elapsed = max(0.0, now.wall - float(data["wall"]))
        rule.met = saved["met"]
        rule.when_met = saved["when_met"]
        rule.blocked = saved["blocked"]
        rule.fired = saved["fired"]
        rule.failsafe_active = saved["failsafe_active"]
        pending = saved["pending_in"]
        # A wait or a revert that fell due during the downtime runs now, at the first tick.
        rule.pending_due = None if pending is None else max(mono, mono + pending - elapsed)
        ago = saved["last_fire_ago"]
        rule.last_fire = None if ago is None else mono - ago - elapsed
        rule.fires.load((mono - a - elapsed for a in saved["fires_ago"]), saved.get("fire_counts"))
        rule.reverts = {
            key: [max(mono, mono + r["in"] - elapsed), 0, r["actuator"], r["payload"]]
            for key, r in saved["reverts"].items()
        }
        for leaf, item in zip(rule.all_leaves(), saved["leaves"], strict=True):
            leaf.met = item["met"]
            leaf.known = item["known"]
            leaf.value = item["value"]
            if isinstance(leaf, WindowLeaf):
                leaf.inner.met = item["inner_met"]
                leaf.load([(mono - a - elapsed, v) for a, v in item["items"]])
        rule.bad_readings = saved["bad_readings"]
        rule.loop_trips = saved["loop_guard_trips"]
        rule.trace = {k: deque(v, maxlen=TRACE_DEPTH) for k, v in saved.get("trace", {}).items()}
    slots = engine.slots()
    elapsed = max(0.0, now.wall - float(data["wall"]))
    for name, seen in data["sensors"].items():
        slot = slots.get(name)
        if slot is not None:
            slot.last_seen = mono - seen["seen_ago"]  # the downtime is not the sensor's silence
    engine.rebuild_timers(now)
    engine._log.info(
        "rule state restored", rules=restored, of=len(engine.rules), elapsed_s=round(elapsed, 3)
    )

