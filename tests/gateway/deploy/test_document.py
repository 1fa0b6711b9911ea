"""A document over the local config: validated as `edgegw check` does, errors located in it."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.deploy.document import review_deployment, with_version

BASE = """\
gateway: {id: hall-pi, state_dir: STATE}
mqtt: {host: 127.0.0.1, port: 1883}
devices:
  - {id: temp-01, profile: json, topic: sensors/temp-01}
actuators:
  - {id: living-room/thermostat, profile: zigbee2mqtt, name: living-room-thermostat}
rules:
  - id: heating
    when: {sensor: temp-01/temperature, below: 18}
    then: [{set: living-room/thermostat, to: {state: heat}}]
"""


@pytest.fixture
def base(tmp_path: Path) -> Path:
    path = tmp_path / "edgegw.yaml"
    path.write_text(BASE.replace("STATE", str(tmp_path / "state")))
    return path


def test_a_valid_document_replaces_the_rules(base: Path) -> None:
    raw = b"""version: 3
rules:
  - id: heating
    when: {sensor: temp-01/temperature, below: 17}
    then: [{set: living-room/thermostat, to: {state: heat}}]
  - id: cold
    when: {sensor: temp-01/temperature, below: 10}
    then: [{emit: {severity: warning}}]
"""
    review = review_deployment(base, raw, "hall-pi", max_bytes=65536)
    assert review.issues == []
    assert review.version == 3
    assert review.sections == ("rules",)
    assert review.loaded is not None
    assert [r.id for r in review.loaded.rules.rules] == ["heating", "cold"]
    assert review.loaded.config.gateway.id == "hall-pi"  # the local file stays the base
    assert review.digest.startswith("sha256:")


def test_json_documents_are_read_too(base: Path) -> None:
    raw = b'{"version": 2, "rules": []}'
    review = review_deployment(base, raw, "group/pis", max_bytes=65536)
    assert review.issues == []
    assert review.loaded is not None
    assert len(review.loaded.rules.rules) == 0


def test_errors_are_located_in_the_document(base: Path) -> None:
    raw = b"""version: 4
rules:
  - id: attic
    when: {sensor: temp-01/temperature, above: 30}
    then: [{set: attic/fan, to: {state: "on"}}]
"""
    review = review_deployment(base, raw, "hall-pi", max_bytes=65536)
    assert review.loaded is None
    texts = [str(i) for i in review.issues]
    assert any(t.startswith("desired[hall-pi]@v4:5:") and "attic/fan" in t for t in texts), texts


def test_refused_sections_and_missing_version(base: Path) -> None:
    raw = b"""rules: []
bridge:
  spool: {max_bytes: 1}
http: {port: 80}
"""
    review = review_deployment(base, raw, "hall-pi", max_bytes=65536)
    texts = [str(i) for i in review.issues]
    assert any("version" in t for t in texts), texts
    assert any(t.startswith("desired[hall-pi]@v?:2:1: bridge: refused: the spool") for t in texts), texts
    http = "desired[hall-pi]@v?:4:1: http: refused: the HTTP listener"
    assert any(t.startswith(http) for t in texts), texts


def test_a_document_too_large_is_rejected_unread(base: Path) -> None:
    review = review_deployment(base, b"version: 1\n" + b"#" * 2000, "hall-pi", max_bytes=1024)
    assert review.loaded is None
    assert "larger than max_document_bytes (1024)" in str(review.issues[0])


def test_bad_yaml_is_located(base: Path) -> None:
    review = review_deployment(base, b"version: 1\nrules: [\n", "hall-pi", max_bytes=1024)
    assert review.loaded is None
    assert str(review.issues[0]).startswith("desired[hall-pi]@v?:")


@pytest.mark.parametrize("depth", [100, 5000])
def test_a_deeply_nested_document_is_rejected_not_a_crash(base: Path, depth: int) -> None:
    """A few KB of [[[...]]] once overflowed the parser's recursion: every gateway it
    targeted died, and again at each start (it stays in the compacted topic)."""
    raw = b"version: 1\nrules: " + b"[" * depth + b"]" * depth + b"\n"
    review = review_deployment(base, raw, "hall-pi", max_bytes=64 * 1024)
    assert review.loaded is None
    assert "invalid YAML: nested deeper than 64 levels" in str(review.issues[0])


def test_the_example_document_fits_the_example_gateway() -> None:
    examples = Path(__file__).resolve().parents[3] / "examples" / "fleet"
    raw = (examples / "ground-floor.yaml").read_bytes()
    review = review_deployment(
        examples / "gateway.yaml", raw + b"version: 1\n", "group/ground-floor", max_bytes=65536
    )
    assert review.issues == []
    assert review.loaded is not None
    assert [r.id for r in review.loaded.rules.rules] == ["heating", "hall-light-at-night"]


@pytest.mark.parametrize(
    ("raw", "written"),
    [
        (b"rules: []\n", b"rules: []\nversion: 4\n"),  # appended: the document's lines stay where they were
        (b"rules: []", b"rules: []\nversion: 4\n"),
        (b"version: 2\nrules: []\n", b"version: 4\nrules: []\n"),
        (b'{"rules": []}', b'{"version": 4, "rules": []}'),
        (b'{"version": 1, "rules": []}', b'{"version": 4, "rules": []}'),
        (b"{rules: []}", b'{"version": 4, "rules": []}'),  # a YAML flow mapping, not JSON
    ],
)
def test_with_version_keeps_the_lines(raw: bytes, written: bytes) -> None:
    assert with_version(raw, 4) == written


def test_rules_in_a_document_replace_included_rules_files(tmp_path: Path) -> None:
    (tmp_path / "local-rules.yaml").write_text(
        "rules:\n  - id: heating\n    when: {sensor: temp-01/temperature, below: 18}\n"
        "    then: [{set: living-room/thermostat, to: {state: heat}}]\n"
    )
    path = tmp_path / "edgegw.yaml"
    base = BASE.replace("STATE", str(tmp_path / "state")).split("rules:")[0] + "include: [local-rules.yaml]\n"
    path.write_text(base)
    raw = b"version: 2\nrules:\n  - id: heating\n    when: {sensor: temp-01/temperature, below: 16}\n" \
          b"    then: [{set: living-room/thermostat, to: {state: heat}}]\n"  # fmt: skip
    review = review_deployment(path, raw, "hall-pi", max_bytes=65536)
    assert review.issues == []  # no duplicate "heating": the local file's include is overlaid
    assert review.loaded is not None
    assert review.loaded.rule_files == ()
