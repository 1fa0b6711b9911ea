"""Checks across rules and against the config, beyond what one rule's model can see.

They read the rules as plain data (the YAML as loaded, or a model dumped by alias), so
they also run on rules that failed validation: ``edgegw rules check`` reports every
problem at once. Every function returns :class:`~gateway.errors.ConfigIssue` objects
that carry a key path (``rules[3].then[0].set``) but no file position: the caller,
which read the file, places them (see ``gateway.yamlio.YamlDocument.place``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import Any

from gateway.errors import ConfigIssue
from rules.schema import Location, Rule

__all__ = ["CommandCheck", "SensorCatalog", "check_rules", "duplicate_ids", "rule_as_data"]

SensorCatalog = Mapping[str, Collection[str] | None]
CommandCheck = Callable[[str, Mapping[str, Any]], str | None]
"""``(actuator id, payload) -> what is wrong with sending it there, or None``."""
"""Declared devices: device id -> its metrics, or ``None`` when any metric is allowed."""


def rule_as_data(rule: Rule) -> dict[str, Any]:
    return rule.model_dump(by_alias=True, exclude_none=True)


def duplicate_ids(raw_rules: Sequence[Any], seen: set[str], prefix: str = "rules") -> list[ConfigIssue]:
    """Rule ids met before (in this file or an earlier one): an issue at each repeat."""
    issues = []
    for index, raw in enumerate(raw_rules):
        rule_id = raw.get("id") if isinstance(raw, Mapping) else None
        if not isinstance(rule_id, str):
            continue
        if rule_id in seen:
            issues.append(
                ConfigIssue(f"duplicate rule id {rule_id!r}", path=f"{prefix}[{index}].id")
            )
        seen.add(rule_id)
    return issues


def _conditions(cond: Any, path: str) -> Iterator[tuple[Mapping[str, Any], str]]:
    if not isinstance(cond, Mapping):
        return
    yield cond, path
    for key in ("all", "any"):
        children = cond.get(key)
        if isinstance(children, list):
            for index, child in enumerate(children):
                yield from _conditions(child, f"{path}.{key}[{index}]")


def _actions(rule: Mapping[str, Any], path: str) -> Iterator[tuple[Mapping[str, Any], str]]:
    failsafe = rule.get("failsafe")
    branches = [("then", rule.get("then")), ("else", rule.get("else"))]
    if isinstance(failsafe, Mapping):
        branches.append(("failsafe.then", failsafe.get("then")))
    for key, actions in branches:
        if isinstance(actions, list):
            for index, action in enumerate(actions):
                if isinstance(action, Mapping):
                    yield action, f"{path}.{key}[{index}]"


def check_rules(
    rules: Sequence[Any],
    *,
    actuators: Collection[str] | None = None,
    sensors: SensorCatalog | None = None,
    location: Location | None = None,
    prefix: str = "rules",
    command_check: CommandCheck | None = None,
) -> list[ConfigIssue]:
    """Issues in rules given as data: nested ``for``, sun guards without a location, and,
    when ``actuators``/``sensors`` are given, names the config does not declare;
    ``command_check(actuator, payload)`` says what an actuator cannot send (or None)."""
    issues: list[ConfigIssue] = []
    for index, rule in enumerate(rules):
        if isinstance(rule, Rule):
            rule = rule_as_data(rule)  # noqa: PLW2901 - the same rule, as data
        if not isinstance(rule, Mapping):
            continue
        path = f"{prefix}[{index}]"
        issues += _check_for_and_unless(rule, path)
        issues += _check_sun(rule, path, location or Location())
        if actuators is not None:
            issues += [
                ConfigIssue(
                    f"unknown actuator {action['set']!r}: it is not declared in the config",
                    path=f"{where}.set",
                )
                for action, where in _actions(rule, path)
                if isinstance(action.get("set"), str) and action["set"] not in actuators
            ]
        if sensors is not None:
            issues += _check_sensors(rule, path, sensors)
        if command_check is not None:
            issues += _check_payloads(rule, path, command_check)
    return issues


def _check_payloads(rule: Mapping[str, Any], path: str, command_check: CommandCheck) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    for action, where in _actions(rule, path):
        target = action.get("set")
        for key in ("to", "revert"):
            payload = action.get(key)
            if isinstance(target, str) and isinstance(payload, Mapping):
                problem = command_check(target, payload)
                if problem is not None:
                    issues.append(ConfigIssue(problem, path=f"{where}.{key}"))
    return issues


def _check_for_and_unless(rule: Mapping[str, Any], path: str) -> list[ConfigIssue]:
    issues = [
        ConfigIssue(
            "`for` applies to the whole condition: put it at the top of `when`",
            path=f"{where}.for",
        )
        for cond, where in _conditions(rule.get("when"), f"{path}.when")
        if "for" in cond and where != f"{path}.when"
    ]
    for cond, where in _conditions(rule.get("unless"), f"{path}.unless"):
        issues += [
            ConfigIssue(f"`unless` takes no `{key}`", path=f"{where}.{key}")
            for key in ("for", "stale")
            if key in cond
        ]
    return issues


def _check_sun(rule: Mapping[str, Any], path: str, location: Location) -> list[ConfigIssue]:
    during = rule.get("during")
    if not isinstance(during, Mapping) or (
        location.latitude is not None and location.longitude is not None
    ):
        return []
    return [
        ConfigIssue(
            "sunrise/sunset need location.latitude and location.longitude",
            path=f"{path}.during.{key}",
        )
        for key in ("after", "before")
        if isinstance(during.get(key), str) and during[key].strip().startswith("sun")
    ]


def _check_sensors(rule: Mapping[str, Any], path: str, catalog: SensorCatalog) -> list[ConfigIssue]:
    issues = []
    for key in ("when", "unless"):
        for cond, where in _conditions(rule.get(key), f"{path}.{key}"):
            sensor = cond.get("sensor")
            if not isinstance(sensor, str) or "/" not in sensor:
                continue
            device, metric = sensor.split("/", 1)
            if device not in catalog:
                message = f"unknown sensor {sensor!r}: no device {device!r} in the config"
            else:
                metrics = catalog[device]
                if metrics is None or metric in metrics:
                    continue
                message = f"unknown sensor {sensor!r}: device {device!r} has no metric {metric!r}"
            issues.append(ConfigIssue(message, path=f"{where}.sensor"))
    return issues
