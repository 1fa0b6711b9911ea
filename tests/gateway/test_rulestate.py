"""The rule-state file: atomic writes, unreadable files set aside, not fatal."""

from __future__ import annotations

from pathlib import Path

from gateway.rulestate import read_rule_state, write_rule_state


def test_roundtrip(tmp_path: Path) -> None:
    path = tmp_path / "rules-state.json"
    assert read_rule_state(path) is None
    assert write_rule_state(path, {"version": 1, "rules": {"a": {"fired": True}}})
    assert read_rule_state(path) == {"version": 1, "rules": {"a": {"fired": True}}}
    assert not path.with_suffix(".tmp").exists()


def test_corrupt_file_is_set_aside(tmp_path: Path) -> None:
    path = tmp_path / "rules-state.json"
    path.write_text('{"version": 1, "rules": {')  # cut short by a power loss
    assert read_rule_state(path) is None
    assert not path.exists()
    kept = list(tmp_path.glob("rules-state.bad-*"))
    assert len(kept) == 1
    assert kept[0].read_text().startswith('{"version"')


def test_unwritable_directory_is_reported_not_raised(tmp_path: Path) -> None:
    assert write_rule_state(tmp_path / "missing-dir" / "rules-state.json", {"version": 1}) is False
