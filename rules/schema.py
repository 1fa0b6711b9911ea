"""The rule language as pydantic models: what a rules file may say, validated once.

The models are the single source of the JSON Schema in ``schemas/rules.schema.json``
(regenerate with ``python -m rules.json_schema > schemas/rules.schema.json``). Cross-rule
checks (duplicate ids, unknown actuators, ``for`` only at the top of ``when``) live in
:mod:`rules.checks`; the engine never sees these models, see :mod:`rules.compiler`.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from rules.durations import Duration

__all__ = [
    "Action",
    "Condition",
    "EmitSpec",
    "Failsafe",
    "Location",
    "Rule",
    "RulesFile",
    "TimeWindow",
    "rules_json_schema",
    "rules_json_schema_text",
]

SCHEMA_ID = "https://example.invalid/edgegw/schemas/rules.schema.json"
SENSOR_PATTERN = r"^[A-Za-z0-9_-]+/.+$"
ACTUATOR_PATTERN = r"^[A-Za-z0-9_-]+(/.+)?$"
RULE_ID_PATTERN = r"^[A-Za-z0-9_.-]+$"
_TIME_BOUND = re.compile(r"^(?:([01]?\d|2[0-3]):([0-5]\d)|(sunrise|sunset)(?:([+-])(.+))?)$")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
Severity = Literal["debug", "info", "warning", "error", "critical"]
_SCALAR = (bool, int, float, str)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=False)




def _matcher(pattern: str, what: str) -> Any:
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.match(value):
            raise ValueError(f"bad {what} {value!r}")
        return value

    return check


SensorId = Annotated[
    str,
    AfterValidator(
        _matcher(SENSOR_PATTERN, "sensor, write device/metric (device: letters, digits, - and _):")
    ),
    WithJsonSchema({"type": "string", "pattern": SENSOR_PATTERN, "description": "`device/metric`"}),
]
ActuatorId = Annotated[
    str,
    AfterValidator(_matcher(ACTUATOR_PATTERN, "actuator id, e.g. living-room/ac:")),
    WithJsonSchema({"type": "string", "pattern": ACTUATOR_PATTERN}),
]
RuleId = Annotated[
    str,
    AfterValidator(_matcher(RULE_ID_PATTERN, "rule id (letters, digits, '.', '-' and '_'):")),
    WithJsonSchema({"type": "string", "pattern": RULE_ID_PATTERN}),
]


class Condition(_Model):
    """A condition on one sensor, or `all:` / `any:` of conditions."""

    model_config = ConfigDict(
        json_schema_extra={
            "oneOf": [{"required": ["sensor"]}, {"required": ["all"]}, {"required": ["any"]}]
        }
    )

    sensor: SensorId | None = None
    above: float | None = Field(None, description="Met when the value is > this (strict).")
    below: float | None = Field(None, description="Met when the value is < this (strict).")
    between: tuple[float, float] | None = Field(
        None, description="[lo, hi], inclusive; lo < hi."
    )
    equals: bool | int | float | str | None = Field(
        None, description="Met when the value equals this (number, boolean or string)."
    )
    hysteresis: float = Field(
        0.0, ge=0, description="Clear only this far back across the threshold."
    )
    for_: Duration | None = Field(
        None, alias="for", description="The condition must hold this long before the rule fires."
    )
    avg: Duration | None = Field(None, description="Compare the average over this window.")
    min: Duration | None = Field(None, description="Compare the minimum over this window.")
    max: Duration | None = Field(None, description="Compare the maximum over this window.")
    rate: Duration | None = Field(
        None, description="Compare the rate of change (units per minute) over this window."
    )
    stale: Duration | None = Field(
        None, description="Met when the sensor sent no data for this long; clears on data."
    )
    all: list[Condition] | None = Field(None, min_length=1)
    any: list[Condition] | None = Field(None, min_length=1)

    @field_validator("between")
    @classmethod
    def _ordered(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and not value[0] < value[1]:
            raise ValueError(f"between needs [lo, hi] with lo < hi, got [{value[0]}, {value[1]}]")
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> Condition:  # noqa: PLR0912 - a flat list of independent checks
        kinds = [k for k in ("sensor", "all", "any") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(
                "a condition needs exactly one of `sensor`, `all` or `any`"
                + (f" (found {', '.join(kinds)})" if kinds else "")
            )
        windows = self.window_keys()
        if self.sensor is None:
            extra = [*self.threshold_keys(), *windows]
            if self.stale is not None:
                extra.append("stale")
            if extra or self.hysteresis:
                keys = ", ".join(extra or ["hysteresis"])
                raise ValueError(f"`{kinds[0]}` takes only a list of conditions and `for`: {keys}")
            return self
        thresholds = self.threshold_keys()
        if self.stale is not None:
            if thresholds or windows or self.hysteresis:
                raise ValueError("`stale` stands alone: no thresholds, windows or hysteresis")
            return self
        if not thresholds:
            raise ValueError("needs a threshold: above, below, between or equals (or stale)")
        if len(windows) > 1:
            raise ValueError(f"use one of avg, min, max, rate; found {', '.join(windows)}")
        if "equals" in thresholds and len(thresholds) > 1:
            raise ValueError("`equals` cannot be combined with above, below or between")
        if "between" in thresholds and len(thresholds) > 1:
            raise ValueError("`between` cannot be combined with above or below")
        if self.above is not None and self.below is not None and not self.above < self.below:
            raise ValueError(
                f"contradictory thresholds: above {self.above} and below {self.below} never hold"
            )
        if self.hysteresis and "equals" in thresholds:
            raise ValueError("hysteresis needs above, below or between, not equals")
        if windows and "equals" in thresholds:
            raise ValueError(f"`equals` cannot compare a window {windows[0]}")
        return self

    @field_validator("equals", mode="before")
    @classmethod
    def _scalar(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, _SCALAR):
            raise ValueError("equals takes a number, a boolean or a string")
        return value

    def threshold_keys(self) -> list[str]:
        return [k for k in ("above", "below", "between", "equals") if getattr(self, k) is not None]

    def window_keys(self) -> list[str]:
        return [k for k in ("avg", "min", "max", "rate") if getattr(self, k) is not None]


class EmitSpec(_Model):
    severity: Severity = "info"
    message: str = ""


class Action(_Model):
    """`set` an actuator (optionally for a while, then `revert`), or `emit` an event."""

    model_config = ConfigDict(
        json_schema_extra={"oneOf": [{"required": ["set", "to"]}, {"required": ["emit"]}]}
    )

    set: ActuatorId | None = Field(
        None, description="Actuator id, e.g. `living-room/ac`."
    )
    to: dict[str, Any] | None = Field(None, description="The payload sent to the actuator.")
    for_: Duration | None = Field(None, alias="for", description="Revert after this long.")
    revert: dict[str, Any] | None = Field(None, description="The payload sent when `for` ends.")
    emit: EmitSpec | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Action:
        if (self.set is None) == (self.emit is None):
            raise ValueError("an action needs exactly one of `set` or `emit`")
        if self.emit is not None:
            stray = [k for k in ("to", "for_", "revert") if getattr(self, k) is not None]
            if stray:
                raise ValueError("`emit` takes no to/for/revert")
            return self
        if self.to is None:
            raise ValueError("`set` needs `to:` (the payload)")
        if (self.for_ is None) != (self.revert is None):
            raise ValueError("a timed `set` needs both `for` and `revert`")
        return self


class TimeWindow(_Model):
    """Time-of-day / weekday guard in the configured time zone. Bounds: `HH:MM`,
    `sunrise`, `sunset`, optionally with an offset (`sunset-30m`). A window may wrap
    midnight (`after: "22:00", before: "06:00"`)."""

    after: str | None = Field(None, description="Open from this time (inclusive).")
    before: str | None = Field(None, description="Open until this time (exclusive).")
    weekdays: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] | None = Field(
        None, min_length=1, description="Open only on these local weekdays."
    )

    @field_validator("after", "before")
    @classmethod
    def _bound(cls, value: str | None) -> str | None:
        if value is None:
            return None
        match = _TIME_BOUND.match(value.strip())
        if match is None:
            raise ValueError(f"bad time {value!r}: write HH:MM, sunrise or sunset (+/- offset)")
        if match.group(5):
            from rules.durations import parse_duration  # noqa: PLC0415

            parse_duration(match.group(5))
        return value.strip()

    @model_validator(mode="after")
    def _something(self) -> TimeWindow:
        if self.after is None and self.before is None and self.weekdays is None:
            raise ValueError("a time window needs after, before or weekdays")
        return self

    def uses_sun(self) -> bool:
        return any(b is not None and b.startswith("sun") for b in (self.after, self.before))


class Failsafe(_Model):
    """Run `then` when a sensor in `when` sent no data for `after` (e.g. heater off)."""

    after: Duration
    then: list[Action] = Field(min_length=1)


class Rule(_Model):
    id: RuleId
    description: str = ""
    enabled: bool = True
    when: Condition
    unless: Condition | None = Field(None, description="The rule is held off while this is met.")
    during: TimeWindow | None = Field(None, description="The rule is only active in this window.")
    then: list[Action] = Field(min_length=1, description="Actions on fire.")
    else_: list[Action] = Field(default_factory=list, alias="else", description="On clear.")
    cooldown: Duration = Field(0.0, description="No re-fire within this time after a fire.")
    max_fires_per_minute: int = Field(10, ge=1, description="Loop guard: fires beyond are dropped.")
    failsafe: Failsafe | None = None


class Location(_Model):
    """Where the gateway is: the time zone of time guards, lat/lon for sunrise/sunset."""

    timezone: str = "UTC"
    latitude: float | None = Field(None, ge=-90, le=90)
    longitude: float | None = Field(None, ge=-180, le=180)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r} (use an IANA name)") from exc
        return value


class RulesFile(_Model):
    """A rules file: a mapping with a `rules:` list (and optionally the `location`)."""

    model_config = ConfigDict(title="edgegw rules")

    location: Location | None = None
    rules: list[Rule]


def rules_json_schema() -> dict[str, Any]:
    schema = RulesFile.model_json_schema(by_alias=True)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID, **schema}


def rules_json_schema_text() -> str:
    """The committed form of the schema: sorted keys, two-space indent, final newline."""
    return json.dumps(rules_json_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
