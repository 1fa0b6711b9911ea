"""The committed JSON Schema of rules files is generated from the models."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

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


def test_examples_validate_against_the_schema_and_typos_do_not() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    from gateway.yamlio import parse_yaml  # noqa: PLC0415

    validator = jsonschema.Draft202012Validator(json.loads(COMMITTED.read_text()))
    for path in sorted((ROOT / "examples").glob("*/rules.yaml")):
        assert list(validator.iter_errors(parse_yaml(path.read_text()).data)) == [], path
    typo = parse_yaml("rules:\n  - id: a\n    when: {sensor: a/b, abvoe: 1, for: 2x}\n    then: []\n").data
    paths = {tuple(e.path) for e in validator.iter_errors(typo)}
    assert paths == {("rules", 0, "then"), ("rules", 0, "when"), ("rules", 0, "when", "for")}
