"""Rule scenarios: run rules on a virtual clock and check the actions they produce.

The format is fixed by design.md ("Rule scenarios"); the CLI (``edgegw rules test``)
reads the files and calls :func:`run_scenario`. A scenario's steps run in order; the
clock advances to each step's ``at`` (running every timer due on the way, at its own
time) before the step's reading is fed. An ``expect`` compares, in any order, the
``set`` actions produced since the previous ``expect`` up to and including its ``at``;
``emit`` actions are compared too when the list names any ``emit``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.errors import ConfigIssue
from gateway.model import Command, Event, EventKind, Reading
from rules.clock import Now
from rules.compiler import RuleSet
from rules.durations import Duration, format_duration
from rules.engine import Action, RuleEngine
from rules.schema import Location, SensorId, Severity

__all__ = [
    "ExpectItem",
    "Mismatch",
    "Scenario",
    "ScenarioResult",
    "Step",
    "check_scenario",
    "run_scenario",
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReadingSpec(_Model):
    sensor: SensorId
    value: bool | int | float | str
    unit: str | None = None

    @field_validator("value", mode="before")
    @classmethod
    def _scalar(cls, value: Any) -> Any:
        if not isinstance(value, bool | int | float | str):
            raise ValueError("a reading value is a number, a boolean or a string")
        return value


class EmitExpect(_Model):
    severity: Severity | None = None
    message: str | None = None


class ExpectItem(_Model):
    set: str | None = None
    to: dict[str, Any] | None = None
    emit: EmitExpect | None = None
    rule: str | None = Field(None, description="Only match actions of this rule.")

    @model_validator(mode="after")
    def _one_kind(self) -> ExpectItem:
        if (self.set is None) == (self.emit is None):
            raise ValueError("an expected action needs exactly one of `set` or `emit`")
        if self.set is not None and self.to is None:
            raise ValueError("an expected `set` needs `to:` (the payload)")
        if self.emit is not None and self.to is not None:
            raise ValueError("an expected `emit` takes no `to`")
        return self

    def describe(self) -> str:
        if self.set is not None:
            text = f"set {self.set} to {_json(self.to)}"
        else:
            assert self.emit is not None
            text = f"emit {self.emit.severity or '*'}" + (
                f" {self.emit.message!r}" if self.emit.message is not None else ""
            )
        return text + (f" (rule {self.rule})" if self.rule else "")


class Step(_Model):
    at: Duration
    reading: ReadingSpec | None = None
    expect: list[ExpectItem] | None = None

    @model_validator(mode="after")
    def _something(self) -> Step:
        if self.reading is None and self.expect is None:
            raise ValueError("a step needs a `reading`, an `expect`, or both")
        return self


class Scenario(_Model):
    """A scenario file. ``rules`` is a path (relative to the file) or an inline list."""

    rules: str | list[Any]
    start: AwareDatetime
    location: Location | None = None
    description: str = ""
    steps: list[Step] = Field(min_length=1)

    @field_validator("rules", mode="before")
    @classmethod
    def _rules(cls, value: Any) -> Any:
        if not isinstance(value, str | list):
            raise ValueError("`rules` is a path to a rules file or a list of rules")
        return value


def check_scenario(scenario: Scenario) -> list[ConfigIssue]:
    """Path-only issues the model cannot see: ``at`` must never decrease."""
    steps = scenario.steps
    return [
        ConfigIssue(
            f"`at` goes back in time: {format_duration(steps[index].at)} after "
            f"{format_duration(steps[index - 1].at)}",
            path=f"steps[{index}].at",
        )
        for index in range(1, len(steps))
        if steps[index].at < steps[index - 1].at
    ]


@dataclass(slots=True)
class _Seen:
    action: Action
    offset: float

    def describe(self) -> str:
        action = self.action
        if isinstance(action, Command):
            text = f"set {action.actuator} to {_json(action.payload)}"
        else:
            text = f"emit {action.severity} {action.message!r}"
        return f"{text} (rule {action.rule_id}, at {format_duration(self.offset)})"


@dataclass(slots=True)
class Mismatch:
    """One ``expect`` that did not hold."""

    step: int
    at: float
    missing: list[str]
    extra: list[str]

    def render(self) -> str:
        lines = [f"at {format_duration(self.at)}: expected actions differ"]
        lines += [f"  - missing: {text}" for text in self.missing]
        lines += [f"  + extra:   {text}" for text in self.extra]
        return "\n".join(lines)


@dataclass(slots=True)
class ScenarioResult:
    expectations: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)
    actions: list[tuple[float, Action]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches


def _json(payload: Any) -> str:
    return json.dumps(payload, sort_keys=True, default=str)


def _matches(item: ExpectItem, action: Action) -> bool:
    if item.rule is not None and item.rule != action.rule_id:
        return False
    if item.set is not None:
        return isinstance(action, Command) and (
            action.actuator == item.set and dict(action.payload) == item.to
        )
    assert item.emit is not None
    if not isinstance(action, Event) or action.kind is not EventKind.EMITTED:
        return False
    if item.emit.severity is not None and item.emit.severity != action.severity:
        return False
    return item.emit.message is None or item.emit.message == action.message


def _compare(step: int, at: float, expected: Sequence[ExpectItem], seen: list[_Seen]) -> Mismatch | None:
    with_emits = any(item.emit is not None for item in expected)
    actual = [
        s
        for s in seen
        if isinstance(s.action, Command)
        or (with_emits and s.action.kind is EventKind.EMITTED)
    ]
    missing = []
    for item in expected:
        for index, candidate in enumerate(actual):
            if _matches(item, candidate.action):
                del actual[index]
                break
        else:
            missing.append(item.describe())
    if not missing and not actual:
        return None
    return Mismatch(step, at, missing, [s.describe() for s in actual])


def run_scenario(scenario: Scenario, ruleset: RuleSet, *, logger: Any = None) -> ScenarioResult:
    """Run the steps; the virtual monotonic clock starts at 0 with the wall at ``start``."""
    start = scenario.start.timestamp()
    engine = RuleEngine(ruleset, Now(0.0, start), logger=logger)
    result = ScenarioResult()
    seen: list[_Seen] = []

    def record(actions: list[Action]) -> None:
        for action in actions:
            offset = action.ts - start
            seen.append(_Seen(action, offset))
            result.actions.append((offset, action))

    for index, step in enumerate(scenario.steps):
        deadline = engine.next_deadline()
        while deadline is not None and deadline <= step.at:
            record(engine.tick(Now(deadline, start + deadline)))
            deadline = engine.next_deadline()
        now = Now(step.at, start + step.at)
        if step.reading is not None:
            device, metric = step.reading.sensor.split("/", 1)
            reading = Reading(device, metric, step.reading.value, now.wall, now.wall, step.reading.unit)
            record(engine.on_reading(reading, now))
        if step.expect is not None:
            result.expectations += 1
            mismatch = _compare(index, step.at, step.expect, seen)
            if mismatch is not None:
                result.mismatches.append(mismatch)
            seen.clear()
    return result
