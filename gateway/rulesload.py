"""Loading rules: the ``rules:`` lists of YAML documents and rules files, validated and
checked against what a config declares (devices, actuators, location).

Used by config loading (:func:`gateway.config.load_config`) and by the command line
(``edgegw rules check`` and ``test``, :mod:`gateway.commands.rules`); the command line
only prints what these return.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.errors import ConfigError, ConfigIssue

if TYPE_CHECKING:
    from gateway.yamlio import KeyPath, YamlDocument
    from rules.checks import CommandCheck
    from rules.schema import Location, Rule

__all__ = ["Declared", "LoadedRules", "load_declared", "load_rules", "load_rules_file", "load_rules_files"]


@dataclass(slots=True)
class LoadedRules:
    rules: list[Rule] = field(default_factory=list)
    location: Location | None = None
    issues: list[ConfigIssue] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Declared:
    """What a config declares: device ids (with their metrics, if listed) and actuators.

    ``None``: not known (the section itself is invalid), so rules are not checked against it.
    """

    devices: dict[str, frozenset[str] | None] | None
    actuators: frozenset[str] | None
    location: Location | None = None
    command_check: CommandCheck | None = None
    """What a declared actuator cannot send (a payload its profile cannot encode)."""


def load_rules(
    docs: Sequence[tuple[YamlDocument, KeyPath]],
    *,
    declared: Declared | None = None,
    location: Location | None = None,
    seen: set[str] | None = None,
) -> LoadedRules:
    """Validate the ``rules:`` lists found at ``path`` in each ``YamlDocument``.

    Every rule is validated on its own so that one bad rule hides no other problem;
    ids are checked across all documents, and against ``seen`` (the ids of rules loaded
    before, which this call adds to): an issue at each repeat.
    """
    from gateway.yamlio import validate  # noqa: PLC0415
    from rules.checks import check_rules, duplicate_ids  # noqa: PLC0415
    from rules.schema import Rule  # noqa: PLC0415

    out = LoadedRules()
    seen = set() if seen is None else seen
    for doc, path in docs:
        raw_rules = doc.sub(path)
        for index in range(len(raw_rules)):
            try:
                out.rules.append(validate(doc, Rule, path=(*path, index)))
            except ConfigError as exc:
                out.issues += exc.issues
        out.issues += doc.place(duplicate_ids(raw_rules, seen, prefix=""), prefix=path)
        out.issues += doc.place(
            check_rules(
                raw_rules,
                actuators=declared.actuators if declared else None,
                sensors=declared.devices if declared else None,
                location=(declared.location if declared else None) or location,
                prefix="",
                command_check=declared.command_check if declared else None,
            ),
            prefix=path,
        )
    return out


def load_rules_file(path: str | Path, declared: Declared | None = None) -> LoadedRules:
    """One rules file (a mapping with ``location:`` and a ``rules:`` list)."""
    return load_rules_files([path], declared)


def load_rules_files(
    paths: Sequence[str | Path], declared: Declared | None = None, *, seen: set[str] | None = None
) -> LoadedRules:
    from gateway.yamlio import load_yaml, validate  # noqa: PLC0415
    from rules.schema import Location  # noqa: PLC0415

    issues: list[ConfigIssue] = []
    docs: list[tuple[YamlDocument, tuple[str | int, ...]]] = []
    location = None
    for path in paths:
        try:
            doc = load_yaml(path)
            shell = validate(doc, _rules_shell())
        except ConfigError as exc:
            issues += exc.issues
            continue
        if shell.location is not None and location is None:
            location = shell.location
        docs.append((doc, ("rules",)))
    out = LoadedRules(location=location or Location())
    loaded = load_rules(docs, declared=declared, location=location, seen=seen) if docs else LoadedRules()
    if declared is not None and declared.location is not None:
        out.location = declared.location
    out.rules = loaded.rules
    out.issues = issues + loaded.issues
    return out


def _rules_shell() -> Any:
    from pydantic import BaseModel, ConfigDict  # noqa: PLC0415

    from rules.schema import Location  # noqa: F401, PLC0415 - pydantic resolves the annotation

    class RulesFileShell(BaseModel):
        model_config = ConfigDict(extra="forbid")
        location: Location | None = None
        rules: list[Any]

    return RulesFileShell


def load_declared(path: str | Path) -> Declared:
    """The devices and actuators of a config file (``devices:``/``actuators:`` lists of
    ids or of mappings with ``id``, devices optionally with ``metrics``)."""
    from pydantic import BaseModel, ConfigDict, Field  # noqa: PLC0415

    from gateway.yamlio import load_yaml, validate  # noqa: PLC0415
    from rules.schema import Location  # noqa: F401, PLC0415 - pydantic resolves the annotation

    class Entry(BaseModel):
        model_config = ConfigDict(extra="allow")
        id: str
        metrics: list[str] | None = None

    class ConfigShell(BaseModel):
        model_config = ConfigDict(extra="allow")
        devices: list[str | Entry] = Field(default_factory=list)
        actuators: list[str | Entry] = Field(default_factory=list)
        location: Location | None = None

    shell = validate(load_yaml(path), ConfigShell)
    devices: dict[str, frozenset[str] | None] = {}
    for item in shell.devices:
        if isinstance(item, str):
            devices[item] = None
        else:
            devices[item.id] = frozenset(item.metrics) if item.metrics is not None else None
    actuators = frozenset(a if isinstance(a, str) else a.id for a in shell.actuators)
    return Declared(devices, actuators, shell.location)
