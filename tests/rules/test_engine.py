"""Engine behaviour beyond the core semantics: fail-safe, loop guard, bad readings,
the sensor index, events and their values, the trace."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from gateway.errors import ConfigError
from gateway.model import Command, Event, EventKind, Reading
from rules import Now, RuleEngine
from tests.rules.helpers import START_WALL, Sim, event_kinds, one_rule, ruleset

FAILSAFE = """
rules:
  - id: heater
    when:
      all:
        - {sensor: room/t, below: 19}
        - {sensor: room/presence, equals: true}
    then: [{set: room/heater, to: {state: "on"}}]
    else: [{set: room/heater, to: {state: "off"}}]
    failsafe:
      after: 10m
      then:
        - set: room/heater
          to: {state: "off"}
        - emit: {severity: warning, message: thermometer silent}
"""


def test_failsafe_runs_once_when_a_sensor_goes_stale_and_the_rule_starts_over() -> None:
    sim = Sim(FAILSAFE)
    with capture_logs() as logs:
        sim.read(0, "room/presence", True)
        sim.read(60, "room/t", 18)
        for t in range(120, 2000, 60):
            sim.read(t, "room/presence", True)  # presence keeps talking, the thermometer does not
        sim.advance(2000)
        sim.read(2000, "room/t", 18)  # back: the rule fires again on this first reading
    assert sim.log(kinds=("set", "emit", "stale")) == [
        (60, "set room/heater on"),
        (660, "stale heater"),
        (660, "set room/heater off"),
        (660, "emit warning thermometer silent"),
        (2000, "set room/heater on"),
    ]
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == [
        "sensor stale, fail-safe actions run"
    ]
    assert any(e["event"] == "sensor back online, rule re-armed" for e in logs)
    assert sim.engine.stats.failsafes == 1
    assert sim.engine.trace("heater")["outcomes"]["failsafe"][0]["detail"].startswith("room/t sent no data")


def test_loop_guard_is_counted_and_logged() -> None:
    sim = Sim(one_rule("{sensor: s/v, above: 1}", "max_fires_per_minute: 3"))
    with capture_logs() as logs:
        for i in range(20):
            sim.read(i, "s/v", 2 if i % 2 == 0 else 0)
    assert len([a for a in sim.log() if a[1] == "fired r"]) == 3
    rule = sim.engine.rule("r")
    assert rule.loop_trips == 7
    assert sim.engine.stats.loop_guard_trips == 7
    trips = [e for e in logs if e["event"] == "rule loop guard tripped: fire dropped"]
    assert len(trips) == 7
    assert trips[0]["log_level"] == "warning"
    assert trips[0]["rule"] == "r"
    assert trips[0]["limit"] == 3
    assert "blocked_by_loop_guard" in sim.engine.trace("r")["outcomes"]


@pytest.mark.parametrize(
    ("when", "bad"),
    [
        pytest.param("{sensor: s/v, above: 1}", "hot", id="string against a number"),
        pytest.param("{sensor: s/v, above: 1}", True, id="boolean against a number"),
        pytest.param("{sensor: s/v, between: [1, 2]}", "1.5", id="numeric string against between"),
        pytest.param("{sensor: s/v, avg: 1m, above: 1}", "x", id="string into a window"),
        pytest.param("{sensor: s/v, equals: open}", 3, id="number against a string"),
    ],
)
def test_bad_readings_are_counted_and_skipped(when: str, bad: object) -> None:
    sim = Sim(one_rule(when))
    with capture_logs() as logs:
        for t in range(5):
            sim.read(t, "s/v", bad)  # type: ignore[arg-type]
    assert sim.log() == []
    assert sim.engine.rule("r").bad_readings == 5
    assert sim.engine.stats.bad_readings == 5
    warned = [e for e in logs if e["event"] == "bad reading skipped"]
    assert [e["count"] for e in warned] == [1, 2, 4]  # loud first, then quieter
    assert warned[0]["sensor"] == "s/v"


def test_a_bad_reading_keeps_the_last_good_state() -> None:
    sim = Sim(one_rule("{sensor: s/v, above: 1}"))
    sim.feed([(0, 2), (1, "garbage"), (2, 3), (3, 0)])
    assert sim.log() == [(0, "fired r"), (3, "cleared r")]


def test_a_reading_only_touches_the_rules_that_read_its_sensor() -> None:
    text = "rules:\n" + "".join(
        f"  - id: r{i}\n    when: {{sensor: d{i}/t, above: 1}}\n    then: [{{set: a/x, to: {{n: {i}}}}}]\n"
        for i in range(50)
    )
    engine = RuleEngine(ruleset(text), Now(0.0, START_WALL))
    slot = engine.slots()["d7/t"]
    assert [leaf.rule.id for leaf in slot.leaves] == ["r7"]  # type: ignore[attr-defined]
    out = engine.on_reading(Reading("d7", "t", 5.0, START_WALL, START_WALL), Now(1.0, START_WALL + 1))
    assert [a.payload for a in out if isinstance(a, Command)] == [{"n": 7}]
    engine.on_reading(Reading("nobody", "t", 5.0, START_WALL, START_WALL), Now(2.0, START_WALL + 2))
    assert engine.stats.unmatched == 1
    assert engine.stats.readings == 2


def test_fired_event_carries_the_deciding_values_and_emit_its_severity() -> None:
    text = """
    rules:
      - id: co2
        description: CO2 high
        when: {sensor: office/co2, avg: 5m, above: 1000}
        then: [{emit: {severity: warning, message: open a window}}]
    """
    engine = RuleEngine(ruleset(text), Now(0.0, START_WALL))
    engine.on_reading(Reading("office", "co2", 900, START_WALL, START_WALL), Now(0.0, START_WALL))
    out = engine.on_reading(
        Reading("office", "co2", 1500, START_WALL + 60, START_WALL + 60), Now(60.0, START_WALL + 60)
    )
    events = [a for a in out if isinstance(a, Event)]
    assert [e.kind for e in events] == [EventKind.FIRED, EventKind.EMITTED]
    assert events[0].values == {"office/co2 avg(5m)": 1200.0}
    assert events[0].message == "CO2 high"
    assert events[0].ts == START_WALL + 60
    assert (events[1].severity, events[1].message) == ("warning", "open a window")


def test_commands_carry_rule_id_and_wall_time() -> None:
    engine = RuleEngine(ruleset(one_rule("{sensor: s/v, above: 1}")), Now(100.0, START_WALL))
    out = engine.on_reading(Reading("s", "v", 2, START_WALL, START_WALL), Now(105.0, START_WALL + 5))
    command = next(a for a in out if isinstance(a, Command))
    assert (command.actuator, dict(command.payload), command.rule_id, command.ts) == (
        "a/out",
        {"state": "on"},
        "r",
        START_WALL + 5,
    )
    assert event_kinds(out) == [EventKind.FIRED]


def test_trace_keeps_the_last_evaluations_per_outcome() -> None:
    sim = Sim(one_rule("{sensor: s/v, above: 1}", "cooldown: 1h"))
    for i in range(20):
        sim.read(i, "s/v", 2 + i if i % 2 == 0 else 0)
    outcomes = sim.engine.trace("r")["outcomes"]
    assert len(outcomes["fired"]) == 1
    assert outcomes["fired"][0]["values"] == {"s/v": 2}
    assert len(outcomes["cleared"]) == 1
    assert len(outcomes["blocked_by_cooldown"]) == 5  # the last five of nine
    assert outcomes["blocked_by_cooldown"][-1]["values"] == {"s/v": 20}
    assert outcomes["blocked_by_cooldown"][-1]["detail"].startswith("cooldown ends in 59m")
    assert sim.engine.stats.blocked_by_cooldown == 9


def test_disabled_rules_do_not_run() -> None:
    sim = Sim(one_rule("{sensor: s/v, above: 1}", "enabled: false"))
    sim.feed([(0, 2)])
    assert sim.actions == []
    assert sim.engine.traces() == {}


def test_tick_runs_timers_at_their_own_time_even_when_called_late() -> None:
    engine = RuleEngine(ruleset(one_rule("{sensor: s/v, above: 1, for: 1m}")), Now(0.0, START_WALL))
    engine.on_reading(Reading("s", "v", 2, START_WALL, START_WALL), Now(0.0, START_WALL))
    assert engine.next_deadline() == 60.0
    out = engine.tick(Now(500.0, START_WALL + 500))
    assert [a.ts for a in out] == [START_WALL + 60, START_WALL + 60]
    assert engine.next_deadline() is None


def test_compiler_refuses_actuators_the_config_does_not_declare() -> None:
    text = one_rule("{sensor: s/v, above: 1}")
    assert len(ruleset(text, actuators={"a/out"})) == 1
    with pytest.raises(ConfigError) as info:
        ruleset(text, actuators={"a/other"})
    assert [(i.path, i.message) for i in info.value.issues] == [
        ("rules[0].then[0].set", "unknown actuator 'a/out': it is not declared in the config"),
        ("rules[0].else[0].set", "unknown actuator 'a/out': it is not declared in the config"),
    ]


def test_compiler_refuses_duplicate_ids() -> None:
    text = one_rule("{sensor: s/v, above: 1}")
    doubled = text + text.split("rules:\n", 1)[1]
    with pytest.raises(ConfigError, match=r"rules\[1\].id: duplicate rule id 'r'"):
        ruleset(doubled)
