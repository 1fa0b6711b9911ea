"""Every example scenario runs through the same code as ``edgegw rules test``."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import main
from gateway.commands.rules import run_scenario_file
from gateway.rulesload import load_rules_files

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SCENARIOS = sorted(EXAMPLES.glob("**/scenario*.yaml"))
RULES = sorted(EXAMPLES.glob("**/rules.yaml"))


def test_there_are_examples() -> None:
    names = {path.parent.name for path in SCENARIOS}
    assert {
        "motion-lights",
        "thermostat",
        "freezer-alarm",
        "window-heating",
        "co2-ventilation",
        "stale-sensor",
    } <= names


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_example_scenario(path: Path) -> None:
    outcome = run_scenario_file(path)
    assert outcome.issues == []
    assert outcome.code == 0, outcome.report


@pytest.mark.parametrize("path", RULES, ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_example_rules_are_valid_and_reference_the_schema(path: Path) -> None:
    assert load_rules_files([path]).issues == []
    first = path.read_text().splitlines()[0]
    assert first == "# yaml-language-server: $schema=../../schemas/rules.schema.json"
    assert (path.parent / "../../schemas/rules.schema.json").resolve().is_file()


def test_all_examples_check_together(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "check", *map(str, RULES)]) == 0
    assert capsys.readouterr().out.startswith("ok: ")
