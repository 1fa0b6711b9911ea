"""The rules engine: YAML rule models, compiler, pure engine, state and scenarios.

Imports only the standard library, pydantic, astral and ``gateway.model`` /
``gateway.errors``: no asyncio, no MQTT, Kafka or SQLite, no files.
"""

from __future__ import annotations

from rules.clock import Now
from rules.compiler import RuleSet, compile_rules
from rules.durations import format_duration, parse_duration
from rules.engine import Action, EngineStats, RuleEngine
from rules.scenario import Scenario, ScenarioResult, run_scenario
from rules.schema import Location, Rule, RulesFile, rules_json_schema
from rules.state import SCHEMA_VERSION as STATE_SCHEMA_VERSION

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
