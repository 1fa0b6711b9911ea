"""Table-driven tests of the semantics of design.md ("Semantics, exactly"), fake clock."""

from __future__ import annotations

import pytest

from gateway.model import Value
from tests.rules.helpers import Sim, one_rule

F, C = "fired r", "cleared r"

CASES: list[tuple[str, str, str, list[tuple[float, Value]], float, list[tuple[float, str]]]] = [
    # id, when, extra rule keys, readings (t, value) of s/v, run until, expected fire/clear log
    ("above is strict", "{sensor: s/v, above: 26}", "", [(0, 25), (1, 26), (2, 26.1)], 5, [(2, F)]),
    ("below is strict", "{sensor: s/v, below: 10}", "", [(0, 11), (1, 10), (2, 9.9)], 5, [(2, F)]),
    (
        "between is inclusive",
        "{sensor: s/v, between: [18, 22]}",
        "",
        [(0, 17.9), (1, 18), (2, 22), (3, 22.1), (4, 22)],
        5,
        [(1, F), (3, C), (4, F)],
    ),
    (
        "above and below together",
        "{sensor: s/v, above: 1, below: 3}",
        "",
        [(0, 1), (1, 2), (2, 3)],
        5,
        [(1, F), (2, C)],
    ),
    (
        "equals a string",
        "{sensor: s/v, equals: open}",
        "",
        [(0, "closed"), (1, "open"), (2, "closed")],
        5,
        [(1, F), (2, C)],
    ),
    ("equals true", "{sensor: s/v, equals: true}", "", [(0, True), (1, False)], 5, [(0, F), (1, C)]),
    ("YAML 1.2: on is a string", "{sensor: s/v, equals: on}", "", [(0, True), (1, "on")], 5, [(1, F)]),
    ("equals a number matches int and float", "{sensor: s/v, equals: 2}", "", [(0, 2.0)], 5, [(0, F)]),
    ("first reading that meets fires", "{sensor: s/v, above: 26}", "", [(0, 30)], 5, [(0, F)]),
    (
        "first reading that does not meet never clears",
        "{sensor: s/v, above: 26}",
        "",
        [(0, 20), (1, 19)],
        5,
        [],
    ),
    ("fires on the crossing only", "{sensor: s/v, above: 26}", "", [(0, 27), (1, 28), (2, 29)], 5, [(0, F)]),
    (
        "clears only after a fire",
        "{sensor: s/v, above: 26}",
        "",
        [(0, 27), (1, 20), (2, 21)],
        5,
        [(0, F), (1, C)],
    ),
    (
        "hysteresis on above: clears at t - h or lower",
        "{sensor: s/v, above: 26, hysteresis: 0.5}",
        "",
        [(0, 27), (1, 25.6), (2, 26.5), (3, 25.5), (4, 26.1)],
        5,
        [(0, F), (3, C), (4, F)],
    ),
    (
        "hysteresis on below: mirrored",
        "{sensor: s/v, below: 20, hysteresis: 1}",
        "",
        [(0, 19), (1, 20.9), (2, 19.5), (3, 21), (4, 19.9)],
        5,
        [(0, F), (3, C), (4, F)],
    ),
    (
        "hysteresis on between widens it for the clear",
        "{sensor: s/v, between: [18, 22], hysteresis: 1}",
        "",
        [(0, 20), (1, 22.9), (2, 17.1), (3, 16.9)],
        5,
        [(0, F), (3, C)],
    ),
    (
        "for delays the fire",
        "{sensor: s/v, above: 26, for: 2m}",
        "",
        [(0, 25), (30, 27)],
        300,
        [(150, F)],
    ),
    (
        "for: a break restarts the wait",
        "{sensor: s/v, above: 26, for: 2m}",
        "",
        [(0, 27), (60, 25), (90, 27)],
        400,
        [(210, F)],
    ),
    (
        "for: readings that keep meeting do not restart the wait",
        "{sensor: s/v, above: 26, for: 1m}",
        "",
        [(0, 27), (30, 28), (50, 27)],
        100,
        [(60, F)],
    ),
    (
        "for: clear after a delayed fire is immediate",
        "{sensor: s/v, above: 26, for: 1m}",
        "",
        [(0, 27), (100, 20)],
        200,
        [(60, F), (100, C)],
    ),
    (
        "cooldown drops a crossing inside it",
        "{sensor: s/v, above: 26}",
        "cooldown: 10m",
        [(0, 27), (60, 20), (120, 27), (180, 20), (600, 27)],
        700,
        [(0, F), (60, C), (600, F)],
    ),
    (
        "cooldown: a dropped crossing does not restart it",
        "{sensor: s/v, above: 26}",
        "cooldown: 100s",
        [(0, 27), (10, 20), (90, 27), (95, 20), (100, 27)],
        200,
        [(0, F), (10, C), (100, F)],
    ),
    (
        "cooldown: a crossing at exactly fire + cooldown fires",
        "{sensor: s/v, above: 26}",
        "cooldown: 1m",
        [(0, 27), (10, 20), (60, 27)],
        100,
        [(0, F), (10, C), (60, F)],
    ),
    (
        "cooldown: the condition staying met after a dropped crossing does not fire later",
        "{sensor: s/v, above: 26}",
        "cooldown: 1m",
        [(0, 27), (10, 20), (20, 27), (70, 28)],
        100,
        [(0, F), (10, C)],
    ),
    ("silence clears nothing", "{sensor: s/v, above: 26}", "", [(0, 27)], 86400, [(0, F)]),
    (
        "stale and back: no fire without a new crossing",
        "{sensor: s/v, above: 26}",
        "",
        [(0, 27), (7200, 28)],
        8000,
        [(0, F)],
    ),
    (
        "avg over a window",
        "{sensor: s/v, avg: 5m, above: 10}",
        "",
        [(0, 0), (60, 30), (120, 10), (420, 0)],
        500,
        [(60, F), (420, C)],
    ),
    (
        "min over a window",
        "{sensor: s/v, min: 1m, above: 10}",
        "",
        [(0, 20), (30, 5), (100, 20)],
        200,
        [(0, F), (30, C), (100, F)],
    ),
    (
        "max over a window",
        "{sensor: s/v, max: 1m, above: 10}",
        "",
        [(0, 20), (30, 5), (100, 5)],
        200,
        [(0, F), (100, C)],
    ),
    (
        "rate of change per minute",
        "{sensor: s/v, rate: 10m, above: 1}",
        "",
        [(0, 20), (60, 20.5), (120, 23), (840, 23), (900, 23)],
        1000,
        [(120, F), (900, C)],
    ),
    (
        "rate with hysteresis (falling fast)",
        "{sensor: s/v, rate: 2m, below: -2, hysteresis: 1}",
        "",
        [(0, 20), (60, 17), (120, 16), (180, 16)],
        300,
        [(60, F), (180, C)],
    ),
    ("stale: no data for a duration", "{sensor: s/v, stale: 10m}", "", [(0, 1)], 700, [(600, F)]),
    (
        "stale: back online clears",
        "{sensor: s/v, stale: 10m}",
        "",
        [(0, 1), (900, 2)],
        2000,
        [(600, F), (900, C), (1500, F)],
    ),
    ("stale: a never-seen sensor goes stale from start", "{sensor: s/v, stale: 1m}", "", [], 100, [(60, F)]),
    ("stale: readings keep it fresh", "{sensor: s/v, stale: 1m}", "", [(0, 1), (50, 1), (100, 1)], 150, []),
    (
        "loop guard: at most N fires per minute",
        "{sensor: s/v, above: 1}",
        "max_fires_per_minute: 2",
        [(0, 2), (1, 0), (2, 2), (3, 0), (4, 2), (5, 0), (61, 2)],
        100,
        [(0, F), (1, C), (2, F), (3, C), (61, F)],
    ),
]


@pytest.mark.parametrize(
    ("when", "extra", "readings", "until", "expected"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_semantics(
    when: str,
    extra: str,
    readings: list[tuple[float, Value]],
    until: float,
    expected: list[tuple[float, str]],
) -> None:
    sim = Sim(one_rule(when, extra))
    sim.feed(readings, until=until)
    assert sim.log() == expected


def test_fire_runs_then_and_clear_runs_else() -> None:
    sim = Sim(one_rule("{sensor: s/v, above: 1}"))
    sim.feed([(0, 2), (10, 0)])
    assert sim.commands() == [(0, "set a/out on"), (10, "set a/out off")]


def test_fire_without_else_produces_only_the_cleared_event() -> None:
    text = """
    rules:
      - id: r
        when: {sensor: s/v, above: 1}
        then: [{emit: {severity: warning, message: hot}}]
    """
    sim = Sim(text)
    sim.feed([(0, 2), (10, 0)])
    assert sim.log(kinds=("fired", "cleared", "emit", "set")) == [
        (0, "fired r"),
        (0, "emit warning hot"),
        (10, "cleared r"),
    ]


def test_timed_set_reverts_when_time_is_up() -> None:
    then = '      - set: a/light\n        to: {state: "ON"}\n        for: 3m\n        revert: {state: "OFF"}'
    sim = Sim(one_rule("{sensor: s/v, equals: true}", then=then, else_="      []"))
    sim.feed([(0, True), (10, False)], until=1000)
    assert sim.commands() == [(0, "set a/light ON"), (180, "set a/light OFF")]


def test_timed_set_fired_again_restarts_its_revert() -> None:
    then = '      - set: a/light\n        to: {state: "ON"}\n        for: 3m\n        revert: {state: "OFF"}'
    sim = Sim(one_rule("{sensor: s/v, equals: true}", then=then, else_="      []"))
    sim.feed([(0, True), (10, False), (120, True), (130, False)], until=1000)
    assert sim.commands() == [(0, "set a/light ON"), (120, "set a/light ON"), (300, "set a/light OFF")]


@pytest.mark.parametrize(
    ("readings", "expected"),
    [
        pytest.param({"a/t": 30, "b/t": 30}, [(1, F)], id="all met"),
        pytest.param({"a/t": 30, "b/t": 10}, [], id="one not met"),
        pytest.param({"a/t": 30}, [], id="unknown counts as not met"),
    ],
)
def test_all_across_sensors(readings: dict[str, float], expected: list[tuple[float, str]]) -> None:
    sim = Sim(one_rule("all:\n  - {sensor: a/t, above: 26}\n  - {sensor: b/t, above: 26}"))
    for sensor, value in readings.items():
        sim.read(1, sensor, value)
    assert sim.log() == expected


def test_any_across_sensors_fires_once_and_clears_when_none_is_met() -> None:
    sim = Sim(one_rule("any:\n  - {sensor: a/t, above: 26}\n  - {sensor: b/t, above: 26}"))
    sim.read(0, "a/t", 30)
    sim.read(1, "b/t", 30)
    sim.read(2, "a/t", 20)
    sim.read(3, "b/t", 20)
    assert sim.log() == [(0, F), (3, C)]


def test_nested_all_any_with_for_at_the_top() -> None:
    when = (
        "all:\n  - {sensor: a/t, above: 26}\n  - any:\n      - {sensor: b/c, equals: open}\n"
        "      - {sensor: b/d, equals: open}\nfor: 1m"
    )
    sim = Sim(one_rule(when))
    sim.read(0, "a/t", 30)
    sim.read(10, "b/d", "open")
    sim.advance(200)
    assert sim.log() == [(70, F)]


def test_unless_holds_the_rule_off_and_releases_it() -> None:
    sim = Sim(one_rule("{sensor: s/v, below: 19}", "unless: {sensor: w/c, equals: open}"))
    sim.read(0, "w/c", "closed")
    sim.read(1, "s/v", 18)
    sim.read(2, "w/c", "open")
    sim.read(3, "s/v", 17)
    sim.read(4, "w/c", "closed")
    assert sim.log() == [(1, F), (2, C), (4, F)]
    trace = sim.engine.trace("r")["outcomes"]
    assert [e["detail"] for e in trace["blocked_by_guard"]] == ["unless"]


def test_unless_on_an_unknown_sensor_does_not_hold_off() -> None:
    sim = Sim(one_rule("{sensor: s/v, below: 19}", "unless: {sensor: w/c, equals: open}"))
    sim.read(0, "s/v", 18)
    assert sim.log() == [(0, F)]
