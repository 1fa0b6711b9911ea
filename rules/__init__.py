"""The rules engine: YAML rule models, compiler, pure engine, state and scenarios.

Imports only the standard library, pydantic, astral and ``gateway.model`` /
``gateway.errors``: no asyncio, no MQTT, Kafka or SQLite, no files.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rules.clock import Now
    from rules.compiler import RuleSet, compile_rules
    from rules.durations import format_duration, parse_duration
    from rules.engine import Action, EngineStats, RuleEngine
    from rules.scenario import Scenario, ScenarioResult, run_scenario
    from rules.schema import Location, Rule, RulesFile, rules_json_schema
    from rules.state import SCHEMA_VERSION as STATE_SCHEMA_VERSION

# Exported name -> (its module, its name there), imported on first use (PEP 562): the gateway loads the engine
# and the compiler, not the scenario runner of `edgegw rules test`.
_EXPORTS: dict[str, tuple[str, str]] = {
    "Now": ("rules.clock", "Now"),
    "RuleSet": ("rules.compiler", "RuleSet"),
    "compile_rules": ("rules.compiler", "compile_rules"),
    "format_duration": ("rules.durations", "format_duration"),
    "parse_duration": ("rules.durations", "parse_duration"),
    "Action": ("rules.engine", "Action"),
    "EngineStats": ("rules.engine", "EngineStats"),
    "RuleEngine": ("rules.engine", "RuleEngine"),
    "Scenario": ("rules.scenario", "Scenario"),
    "ScenarioResult": ("rules.scenario", "ScenarioResult"),
    "run_scenario": ("rules.scenario", "run_scenario"),
    "Location": ("rules.schema", "Location"),
    "Rule": ("rules.schema", "Rule"),
    "RulesFile": ("rules.schema", "RulesFile"),
    "rules_json_schema": ("rules.schema", "rules_json_schema"),
    "STATE_SCHEMA_VERSION": ("rules.state", "SCHEMA_VERSION"),
}


def __getattr__(name: str) -> Any:
    where = _EXPORTS.get(name)
    if where is None:
        raise AttributeError(f"module 'rules' has no attribute {name!r}")
    value = getattr(import_module(where[0]), where[1])
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


__all__ = [
    "STATE_SCHEMA_VERSION",
    "Action",
    "EngineStats",
    "Location",
    "Now",
    "Rule",
    "RuleEngine",
    "RuleSet",
    "RulesFile",
    "Scenario",
    "ScenarioResult",
    "compile_rules",
    "format_duration",
    "parse_duration",
    "rules_json_schema",
    "run_scenario",
]
