"""Checks across rules and against the config, after each rule validated on its own.

Every function returns :class:`~gateway.errors.ConfigIssue` objects that carry a key
path (``rules[3].then[0].set``) but no file position: the caller, which read the file,
places them (see ``gateway.yamlio.YamlDocument.place``).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import Any

from gateway.errors import ConfigIssue
from rules.schema import Action, Condition, Location, Rule

__all__ = ["check_rules", "duplicate_ids", "rule_actuators", "rule_sensors"]

SensorCatalog = Mapping[str, Collection[str] | None]
"""Declared devices: device id -> its metrics, or ``None`` when any metric is allowed."""


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


def _conditions(cond: Condition, path: str) -> Iterator[tuple[Condition, str]]:
    yield cond, path
    for key in ("all", "any"):
        children: list[Condition] | None = getattr(cond, key)
        for index, child in enumerate(children or []):
            yield from _conditions(child, f"{path}.{key}[{index}]")


def _actions(rule: Rule, path: str) -> Iterator[tuple[Action, str]]:
    for index, action in enumerate(rule.then):
        yield action, f"{path}.then[{index}]"
    for index, action in enumerate(rule.else_):
        yield action, f"{path}.else[{index}]"
    if rule.failsafe is not None:
        for index, action in enumerate(rule.failsafe.then):
            yield action, f"{path}.failsafe.then[{index}]"


def rule_sensors(rule: Rule) -> set[str]:
    """Every sensor a rule reads (``when`` and ``unless``)."""
    found = {c.sensor for c, _ in _conditions(rule.when, "") if c.sensor}
    if rule.unless is not None:
        found |= {c.sensor for c, _ in _conditions(rule.unless, "") if c.sensor}
    return found


def rule_actuators(rule: Rule) -> set[str]:
    return {a.set for a, _ in _actions(rule, "") if a.set is not None}


def check_rules(  # noqa: PLR0912 - a flat list of independent checks
    rules: Sequence[Rule],
    *,
    actuators: Collection[str] | None = None,
    sensors: SensorCatalog | None = None,
    location: Location | None = None,
    prefix: str = "rules",
    indices: Sequence[int] | None = None,
) -> list[ConfigIssue]:
    """Issues in valid rules: nested ``for``, sun guards without a location, and, when
    ``actuators``/``sensors`` are given, names the config does not declare.

    ``indices`` gives each rule's index in its file when some rules were left out
    (because they did not validate).
    """
    issues: list[ConfigIssue] = []
    for pos, rule in enumerate(rules):
        path = f"{prefix}[{indices[pos] if indices is not None else pos}]"
        for cond, where in _conditions(rule.when, f"{path}.when"):
            if cond.for_ is not None and where != f"{path}.when":
                issues.append(
                    ConfigIssue(
                        "`for` applies to the whole condition: put it at the top of `when`",
                        path=f"{where}.for",
                    )
                )
        if rule.unless is not None:
            for cond, where in _conditions(rule.unless, f"{path}.unless"):
                if cond.for_ is not None:
                    issues.append(ConfigIssue("`unless` takes no `for`", path=f"{where}.for"))
                if cond.stale is not None:
                    issues.append(ConfigIssue("`unless` takes no `stale`", path=f"{where}.stale"))
        if rule.during is not None and rule.during.uses_sun():
            loc = location or Location()
            if loc.latitude is None or loc.longitude is None:
                key = "after" if (rule.during.after or "").startswith("sun") else "before"
                issues.append(
                    ConfigIssue(
                        "sunrise/sunset need location.latitude and location.longitude",
                        path=f"{path}.during.{key}",
                    )
                )
        if actuators is not None:
            for action, where in _actions(rule, path):
                if action.set is not None and action.set not in actuators:
                    issues.append(
                        ConfigIssue(
                            f"unknown actuator {action.set!r}: it is not declared in the config",
                            path=f"{where}.set",
                        )
                    )
        if sensors is not None:
            issues += _check_sensors(rule, path, sensors)
    return issues


def _check_sensors(rule: Rule, path: str, catalog: SensorCatalog) -> list[ConfigIssue]:
    issues = []
    trees = [(rule.when, f"{path}.when")]
    if rule.unless is not None:
        trees.append((rule.unless, f"{path}.unless"))
    for tree, base in trees:
        for cond, where in _conditions(tree, base):
            if cond.sensor is None:
                continue
            device, metric = cond.sensor.split("/", 1)
            if device not in catalog:
                message = f"unknown sensor {cond.sensor!r}: no device {device!r} in the config"
            else:
                metrics = catalog[device]
                if metrics is None or metric in metrics:
                    continue
                message = f"unknown sensor {cond.sensor!r}: device {device!r} has no metric {metric!r}"
            issues.append(ConfigIssue(message, path=f"{where}.sensor"))
    return issues
