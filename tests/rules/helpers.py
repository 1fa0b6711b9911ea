"""Test helpers: rules from YAML text, and a simulator on a fake clock."""

from __future__ import annotations

import datetime as dt
import json
import textwrap
from collections.abc import Sequence
from typing import Any

from gateway.model import Command, Event, EventKind, Reading, Value
from gateway.yamlio import parse_yaml, validate
from rules import Location, Now, RuleEngine, RuleSet, RulesFile, compile_rules
from rules.engine import Action

START = dt.datetime(2026, 1, 5, 8, 0, tzinfo=dt.UTC)  # a Monday
START_WALL = START.timestamp()


def ruleset(text: str, *, actuators: set[str] | None = None, location: Location | None = None) -> RuleSet:
    doc = parse_yaml(textwrap.dedent(text), "test.yaml")
    parsed = validate(doc, RulesFile)
    return compile_rules(parsed.rules, actuators=actuators, location=location or parsed.location)


def one_rule(when: str, extra: str = "", *, then: str = "", else_: str = "") -> str:
    """A rules file with rule ``r``: ``then`` sets a/out on, ``else`` sets it off."""
    when_block = textwrap.indent(textwrap.dedent(when).strip(), " " * 6)
    extra_block = textwrap.indent(textwrap.dedent(extra).strip(), " " * 4) if extra else ""
    then_block = then or '      - set: a/out\n        to: {state: "on"}'
    else_block = else_ or '      - set: a/out\n        to: {state: "off"}'
    return (
        "rules:\n  - id: r\n    when:\n"
        + when_block
        + "\n    then:\n"
        + then_block
        + "\n    else:\n"
        + else_block
        + "\n"
        + (extra_block + "\n" if extra_block else "")
    )


def describe(action: Action) -> str:
    if isinstance(action, Command):
        payload = dict(action.payload)
        if set(payload) == {"state"}:
            return f"set {action.actuator} {payload['state']}"
        return f"set {action.actuator} {json.dumps(payload, sort_keys=True)}"
    if action.kind is EventKind.EMITTED:
        return f"emit {action.severity} {action.message}".rstrip()
    return f"{action.kind.value} {action.rule_id}"


class Sim:
    """Drives an engine like the scenario runner: timers run at their own due time."""

    def __init__(self, rules: RuleSet | str, *, start: float = START_WALL, logger: Any = None) -> None:
        self.ruleset = rules if isinstance(rules, RuleSet) else ruleset(rules)
        self.start = start
        self.engine = RuleEngine(self.ruleset, Now(0.0, start), logger=logger)
        self.t = 0.0
        self.actions: list[tuple[float, Action]] = []

    def now(self, t: float | None = None) -> Now:
        t = self.t if t is None else t
        return Now(t, self.start + t)

    def _record(self, actions: list[Action]) -> None:
        self.actions += [(a.ts - self.start, a) for a in actions]

    def advance(self, t: float) -> None:
        assert t >= self.t
        deadline = self.engine.next_deadline()
        while deadline is not None and deadline <= t:
            self._record(self.engine.tick(self.now(deadline)))
            deadline = self.engine.next_deadline()
        self.t = t

    def read(self, t: float, sensor: str, value: Value) -> None:
        self.advance(t)
        device, metric = sensor.split("/", 1)
        wall = self.start + t
        self._record(self.engine.on_reading(Reading(device, metric, value, wall, wall), self.now()))

    def feed(
        self, steps: Sequence[tuple[float, Value]], sensor: str = "s/v", until: float | None = None
    ) -> None:
        for t, value in steps:
            self.read(t, sensor, value)
        if until is not None:
            self.advance(until)

    def log(self, *, kinds: tuple[str, ...] = ("fired", "cleared")) -> list[tuple[float, str]]:
        """``(t, "fired r")``... filtered by the first word of the description."""
        out = []
        for t, action in self.actions:
            text = describe(action)
            if text.split(" ", 1)[0] in kinds:
                out.append((round(t, 6), text))
        return out

    def commands(self) -> list[tuple[float, str]]:
        return self.log(kinds=("set",))


def event_kinds(actions: list[Action]) -> list[EventKind]:
    return [a.kind for a in actions if isinstance(a, Event)]
