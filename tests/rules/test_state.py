"""Rule state to and from plain data: a restart loses no timer, cooldown or window."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.errors import RuleError
from gateway.model import Reading, Value
from rules import STATE_SCHEMA_VERSION, Now, RuleEngine, RuleSet
from rules.engine import Action
from rules.state import from_entries, rule_entries, summary_entry
from tests.rules.helpers import START_WALL, Sim, describe, one_rule, ruleset


class Restartable:
    """An engine that can be snapshotted, "powered off" for a while and restored."""

    def __init__(self, rules: RuleSet, via: str = "snapshot") -> None:
        self.rules = rules
        self.via = via
        """``snapshot`` (the one JSON document of earlier versions) or ``rows`` (the spool's)."""
        self.mono = 0.0
        self.wall = START_WALL
        self.engine = RuleEngine(rules, self.now())
        self.log: list[tuple[float, str]] = []
        self.rows: dict[str, Any] = {}
        """What the spool holds: each rule's last row, as :meth:`RuleEngine.take_changes`
        handed them out after every reading and timer."""

    def now(self) -> Now:
        return Now(self.mono, self.wall)

    def _record(self, actions: list[Action]) -> None:
        self.log += [(round(a.ts - START_WALL, 3), describe(a)) for a in actions]
        self.rows.update(self.engine.take_changes(self.now()) or {})

    def to(self, wall_offset: float) -> None:
        """Advance both clocks to ``START_WALL + wall_offset``, running timers on the way."""
        step = wall_offset - (self.wall - START_WALL)
        deadline = self.engine.next_deadline()
        while deadline is not None and deadline <= self.mono + step:
            self._record(self.engine.tick(Now(deadline, self.wall + deadline - self.mono)))
            deadline = self.engine.next_deadline()
        self.mono += step
        self.wall += step

    def read(self, wall_offset: float, sensor: str, value: Value) -> None:
        self.to(wall_offset)
        device, metric = sensor.split("/", 1)
        self._record(self.engine.on_reading(Reading(device, metric, value, self.wall, self.wall), self.now()))

    def restart(self, downtime: float, *, rules: RuleSet | None = None) -> dict[str, Any]:
        now = self.now()
        if self.via == "rows":
            rows = {**self.rows, **summary_entry(self.engine, now)}
            data: dict[str, Any] | None = from_entries(json.loads(json.dumps(rows)))  # plain JSON
        else:
            data = json.loads(json.dumps(self.engine.snapshot(now)))
        assert data is not None
        self.wall += downtime
        self.mono = 1_000_000.0  # the monotonic clock restarted with the machine
        self.engine = RuleEngine(rules or self.rules, self.now())
        self.engine.restore(data, self.now())
        self._record(self.engine.tick(self.now()))
        return data


VIA = pytest.mark.parametrize("via", ["snapshot", "rows"])


def test_a_rule_row_taken_again_changes_only_where_the_rule_changed() -> None:
    """The spool logs what changed in a row (SD-card wear): times kept as the clock read
    them do not move from one row to the next, as ages would."""
    box = Restartable(ruleset(one_rule("{sensor: s/v, above: 1, for: 2m}", "cooldown: 10m")))
    box.read(0, "s/v", 2)
    box.to(200)
    box.read(201, "s/v", 0)
    first = rule_entries(box.engine.rules, box.now())["rule:r"]
    box.read(230, "s/v", 0.5)
    second = rule_entries(box.engine.rules, box.now())["rule:r"]
    assert first["last_fire_ago"] is not None
    assert first["fires_ago"]
    assert {k for k in second if second[k] != first[k]} == {"leaves", "clock"}
    # the wall time each was taken at is there all the same
    restored = from_entries({"rule:r": second})
    assert restored is not None
    assert restored["rules"]["r"]["wall"] == pytest.approx(box.wall, abs=0.01)


def test_snapshot_is_plain_json_with_a_schema_version() -> None:
    box = Restartable(ruleset(one_rule("{sensor: s/v, above: 1}")))
    box.read(0, "s/v", 2)
    data = box.engine.snapshot(box.now())
    assert json.loads(json.dumps(data)) == data
    assert data["version"] == STATE_SCHEMA_VERSION == 1
    assert data["rules"]["r"]["fired"] is True


@VIA
def test_pending_for_wait_continues_after_restart_minus_the_downtime(via: str) -> None:
    box = Restartable(ruleset(one_rule("{sensor: s/v, above: 1, for: 2m}")), via)
    box.read(0, "s/v", 2)
    box.to(30)
    box.restart(downtime=10)
    box.to(119)
    assert box.log == []
    box.to(121)
    assert box.log == [(120, "fired r"), (120, "set a/out on")]


def test_a_reading_that_changes_no_flag_writes_no_row_and_a_restart_resumes_all_the_same() -> None:
    """Most readings of a house only move a value (SD-card wear: the spool writes every row
    it is handed). A threshold leaf's flags decide; its row keeps the value it was last
    written with, and a restart from those rows fires at the same time."""
    box = Restartable(ruleset(one_rule("{sensor: s/v, above: 1, for: 2m}")), "rows")
    box.read(0, "s/v", 2)
    written = dict(box.rows)
    for t, value in ((20, 3), (40, 4.5), (60, 2)):
        box.read(t, "s/v", value)  # its changes, if any, go to box.rows
    assert box.rows == written
    box.read(61, "s/v", "warm")  # a bad reading is counted: that is state
    assert box.rows["rule:r"]["bad_readings"] == 1
    box.to(70)
    box.restart(downtime=10)
    leaf = box.engine.rule("r").all_leaves()[0]
    assert (leaf.met, leaf.known, leaf.value) == (True, True, 2)
    box.to(119)
    assert box.log == []
    box.to(121)
    assert box.log == [(120, "fired r"), (120, "set a/out on")]


def test_every_window_sample_is_state() -> None:
    box = Restartable(ruleset(one_rule("{sensor: s/v, avg: 5m, above: 10}")), "rows")
    box.read(0, "s/v", 2)  # its changes went to box.rows
    box.engine.on_reading(Reading("s", "v", 3, box.wall, box.wall), box.now())
    changed = box.engine.take_changes(box.now())
    assert changed is not None
    assert [v for _, v in changed["rule:r"]["leaves"][0]["items"]] == [2, 3]


@VIA
def test_revert_due_during_downtime_runs_at_the_first_tick(via: str) -> None:
    then = '      - set: a/light\n        to: {state: "ON"}\n        for: 3m\n        revert: {state: "OFF"}'
    box = Restartable(ruleset(one_rule("{sensor: s/v, equals: true}", then=then, else_="      []")), via)
    box.read(0, "s/v", True)
    box.to(60)
    box.restart(downtime=600)
    assert box.log[-1] == (660, "set a/light OFF")


@VIA
def test_cooldown_survives_a_restart(via: str) -> None:
    box = Restartable(ruleset(one_rule("{sensor: s/v, above: 1}", "cooldown: 10m")), via)
    box.read(0, "s/v", 2)
    box.read(30, "s/v", 0)
    box.restart(downtime=120)
    box.read(300, "s/v", 2)  # inside the cooldown: dropped
    box.read(400, "s/v", 0)
    box.read(600, "s/v", 2)  # at fire + cooldown: fires
    assert [entry for entry in box.log if entry[1].startswith(("fired", "cleared"))] == [
        (0, "fired r"),
        (30, "cleared r"),
        (600, "fired r"),
    ]


def test_fired_state_survives_so_a_restart_neither_refires_nor_forgets_to_clear() -> None:
    box = Restartable(ruleset(one_rule("{sensor: s/v, above: 1, hysteresis: 0.5}")))
    box.read(0, "s/v", 2)
    box.restart(downtime=5)
    box.read(10, "s/v", 3)
    box.read(11, "s/v", 0.8)  # the hysteresis latch survived too: no clear yet
    box.read(12, "s/v", 0.5)
    assert [e for e in box.log if e[1].startswith(("fired", "cleared"))] == [
        (0, "fired r"),
        (12, "cleared r"),
    ]


@VIA
def test_window_contents_survive_and_age(via: str) -> None:
    box = Restartable(ruleset(one_rule("{sensor: s/v, avg: 5m, above: 10}")), via)
    box.read(0, "s/v", 0)
    box.read(60, "s/v", 18)  # avg 9
    box.restart(downtime=60)
    box.read(180, "s/v", 15)  # avg(0, 18, 15) = 11
    assert box.log[0] == (180.0, "fired r")
    box.read(400, "s/v", 0)  # the readings at 0 and 60 left the window: avg(15, 0) = 7.5
    assert box.log[-2] == (400.0, "cleared r")


def test_state_of_a_changed_rule_is_dropped() -> None:
    box = Restartable(ruleset(one_rule("{sensor: s/v, above: 1}")))
    box.read(0, "s/v", 2)
    box.restart(downtime=5, rules=ruleset(one_rule("{sensor: s/v, above: 5}")))
    box.read(10, "s/v", 6)
    assert box.log[-2:] == [(10, "fired r"), (10, "set a/out on")]


def test_trace_and_counters_are_kept_in_the_snapshot() -> None:
    box = Restartable(ruleset(one_rule("{sensor: s/v, above: 1}")))
    box.read(0, "s/v", 2)
    box.read(1, "s/v", "bad")
    box.restart(downtime=5)
    trace = box.engine.trace("r")
    assert trace["outcomes"]["fired"][0]["values"] == {"s/v": 2}
    assert trace["bad_readings"] == 1


def test_a_wall_clock_that_went_backwards_counts_as_no_time_passed() -> None:
    box = Restartable(ruleset(one_rule("{sensor: s/v, above: 1, for: 2m}")))
    box.read(0, "s/v", 2)
    box.to(30)
    box.restart(downtime=-3600)  # the Pi booted with a clock an hour behind
    assert box.engine.next_deadline() == pytest.approx(1_000_000.0 + 90)


def test_the_downtime_does_not_make_sensors_stale() -> None:
    box = Restartable(ruleset(one_rule("{sensor: s/v, stale: 10m}")))
    box.read(0, "s/v", 1)
    box.restart(downtime=3600)
    assert box.log == []
    box.to(3600 + 599)
    assert box.log == []
    box.to(3600 + 600)
    assert box.log[0] == (4200, "fired r")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param(
            {"version": 99, "wall": 0, "rules": {}, "sensors": {}}, "newer than this edgegw", id="newer"
        ),
        pytest.param({"wall": 0, "rules": {}, "sensors": {}}, "without a schema version", id="missing"),
        pytest.param({"version": 0, "wall": 0, "rules": {}, "sensors": {}}, "cannot migrate", id="too old"),
    ],
)
def test_snapshot_versions(data: dict[str, Any], message: str) -> None:
    engine = RuleEngine(ruleset(one_rule("{sensor: s/v, above: 1}")), Now(0.0, START_WALL))
    with pytest.raises(RuleError, match=message):
        engine.restore(data, Now(0.0, START_WALL))


def test_silence_before_the_snapshot_still_counts_the_downtime_does_not() -> None:
    box = Restartable(ruleset(one_rule("{sensor: s/v, stale: 10m}")))
    box.read(0, "s/v", 1)
    box.to(240)  # silent for 4 of its 10 minutes
    box.restart(downtime=3600)
    box.to(3840 + 359)
    assert box.log == []
    box.to(3840 + 360)
    assert box.log[0] == (4200.0, "fired r")


def test_reload_keeps_the_state_of_unchanged_rules_and_every_timer() -> None:
    old = ruleset(one_rule("{sensor: s/v, stale: 10m}"))
    sim = Sim(old)
    sim.read(0, "s/v", 1)
    sim.advance(300)
    text = one_rule("{sensor: s/v, stale: 10m}") + one_rule("{sensor: x/y, above: 1}").replace(
        "rules:\n  - id: r", "  - id: other"
    )
    sim.engine = sim.engine.with_rules(ruleset(text), sim.now())
    sim.advance(599)
    assert sim.log() == []
    sim.advance(600)
    assert sim.log() == [(600, "fired r")]
    sim.read(601, "x/y", 2)
    assert sim.log()[-1] == (601, "fired other")
