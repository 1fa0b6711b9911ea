"""The gateway config: one file, every error at file:line:column, rules checked against it."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from gateway.config import config_json_schema_text, load_config
from gateway.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]

GOOD = """\
gateway: {id: hall-pi}
location: {timezone: Europe/Berlin}
devices:
  - {id: living-room, topic: zigbee2mqtt/living-room, profile: zigbee2mqtt}
actuators:
  - {id: living-room/ac, profile: zigbee2mqtt, name: living-room-ac}
rules:
  - id: hot
    when: {sensor: living-room/temperature, above: 26}
    then: [{set: living-room/ac, to: {state: "on"}}]
include: [more-rules.yaml]
"""

MORE = """\
rules:
  - id: cold
    when: {sensor: living-room/temperature, below: 18}
    then: [{set: living-room/ac, to: {state: "off"}}]
"""


def _write(tmp_path: Path, text: str, more: str = MORE) -> Path:
    (tmp_path / "more-rules.yaml").write_text(more)
    path = tmp_path / "edgegw.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def _errors(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return [str(issue) for issue in info.value.issues]


def test_valid_config_with_inline_and_included_rules(tmp_path: Path) -> None:
    loaded = load_config(_write(tmp_path, GOOD))
    assert [rule.id for rule in loaded.rules.rules] == ["hot", "cold"]
    assert loaded.config.gateway.id == "hall-pi"
    assert loaded.rules.location.timezone == "Europe/Berlin"
    assert loaded.rule_files == (tmp_path / "more-rules.yaml",)


def test_unknown_key_is_located(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD.replace("gateway: {id: hall-pi}", "gateway: {id: hall-pi, colour: red}"))
    assert _errors(path) == [f"{path}:1:24: gateway.colour: unknown key 'colour'"]


def test_rule_naming_an_undeclared_actuator_is_a_config_error(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD.replace("then: [{set: living-room/ac", "then: [{set: kitchen/light"))
    errors = _errors(path)
    assert len(errors) == 1
    assert errors[0].startswith(f"{path}:10:")
    assert "kitchen/light" in errors[0]
    assert "not declared" in errors[0] or "unknown actuator" in errors[0]


def test_errors_in_included_files_name_that_file(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD, more=MORE.replace("below: 18", "below: cold"))
    errors = _errors(path)
    assert len(errors) == 1
    assert errors[0].startswith(f"{tmp_path / 'more-rules.yaml'}:3:")


def test_duplicate_rule_id_across_inline_and_included(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD, more=MORE.replace("id: cold", "id: hot"))
    assert any("duplicate rule id 'hot'" in e for e in _errors(path))


def test_secrets_are_never_inline(tmp_path: Path) -> None:
    path = _write(tmp_path, "mqtt: {username: edgegw, password: hunter2}\n")
    errors = _errors(path)
    assert len(errors) == 1
    assert errors[0].startswith(f"{path}:1:")
    assert "hunter2" not in errors[0]


def test_state_dir_defaults(tmp_path: Path) -> None:
    loaded = load_config(_write(tmp_path, "gateway: {}\n"))
    section = loaded.config.gateway
    assert section.resolved_state_dir({"STATE_DIRECTORY": "/var/lib/edgegw"}) == Path("/var/lib/edgegw")
    assert section.resolved_state_dir({}) == Path("state")


def test_committed_config_schema_is_current() -> None:
    committed = (ROOT / "schemas" / "config.schema.json").read_text()
    assert committed == config_json_schema_text(), (
        "schemas/config.schema.json is stale: run "
        "`.venv/bin/python -m gateway.config > schemas/config.schema.json`"
    )
