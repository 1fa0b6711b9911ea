"""The committed JSON Schema of rules files is generated from the models."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from rules.schema import rules_json_schema_text

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "schemas" / "rules.schema.json"


def test_committed_schema_is_up_to_date() -> None:
    assert COMMITTED.read_text() == rules_json_schema_text(), (
        "schemas/rules.schema.json is stale: run "
        "`.venv/bin/python -m rules.json_schema > schemas/rules.schema.json`"
    )


def test_generator_prints_the_schema() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "rules.json_schema"], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout == rules_json_schema_text()
    assert out.stderr == ""


def test_schema_names_the_fixed_keys() -> None:
    schema = json.loads(COMMITTED.read_text())
    rule = schema["$defs"]["Rule"]["properties"]
    assert {"id", "when", "then", "else", "cooldown"} <= set(rule)
    condition = schema["$defs"]["Condition"]["properties"]
    assert {"sensor", "above", "below", "between", "equals", "hysteresis", "for"} <= set(condition)
    assert condition["for"]["anyOf"][0]["pattern"].startswith("^(")
    assert schema["$defs"]["Rule"]["additionalProperties"] is False
