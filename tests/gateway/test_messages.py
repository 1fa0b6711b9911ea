"""The messages people read for the pydantic errors that reach them (issue 18, item 3).

One broken file per pydantic error type that ``edgegw check`` (or ``edgegw rules test``)
can meet, with the exact line a person reads: no "Input should be a valid dictionary or
instance of SecretRef". A test checks that the table covers every entry of
:data:`gateway.messages.MESSAGES`, so a new mapping comes with its case.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.cli import main
from gateway.messages import MESSAGES

SECRET = "hunter2-never-shown"
RULE = """\
devices: [{id: a, topic: a/t}]
rules:
  - id: r
    when: {sensor: a/t, above: 1}
    then: [{emit: {}}]
"""


def case(kind: str, text: str, at: str, message: str) -> Any:
    """``text`` is the file; the error is expected where ``at`` first occurs in it."""
    return pytest.param(kind, text, at, message, id=kind)


CASES = [
    case(
        "string_type",
        "mqtt: {host: 5}\n",
        "5",
        'mqtt.host: expected text, got the number 5 (put it in quotes: "5")',
    ),
    case("int_type", "mqtt: {port: [1883]}\n", "[", "mqtt.port: expected a whole number, got a list"),
    case(
        "int_parsing", "mqtt: {port: abc}\n", "abc", "mqtt.port: expected a whole number, got the text 'abc'"
    ),
    case(
        "int_from_float",
        "mqtt: {port: 1883.5}\n",
        "1883",
        "mqtt.port: expected a whole number, got the number 1883.5",
    ),
    case(
        "float_type", "location: {latitude: [52]}\n", "[", "location.latitude: expected a number, got a list"
    ),
    case(
        "float_parsing",
        "location: {latitude: north}\n",
        "north",
        "location.latitude: expected a number, got the text 'north'",
    ),
    case("bool_type", "http: {enabled: [1]}\n", "[", "http.enabled: expected true or false, got a list"),
    case(
        "bool_parsing",
        "http: {enabled: maybe}\n",
        "maybe",
        "http.enabled: expected true or false, got the text 'maybe'",
    ),
    case(
        "dict_type",
        "devices:\n  - {id: a, topic: a/b, fields: [t]}\n",
        "[t]",
        "devices[0].fields: expected a mapping (key: value), got a list",
    ),
    case("model_type", "http: 9108\n", "9108", "http: expected a mapping (key: value), got the number 9108"),
    case(
        "model_type (an inline secret)",
        f"mqtt: {{username: gw, password: {SECRET}}}\n",
        SECRET,
        "mqtt.password: a secret is never written in the config: name where to read it, "
        "{credential: NAME} (systemd LoadCredential=), {file: PATH} (its first line) or {env: VARIABLE}",
    ),
    case(
        "list_type",
        "devices: {id: a, topic: a/b}\n",
        "{",
        "devices: expected a list (`- item` lines, or [a, b]), got a mapping",
    ),
    case(
        "tuple_type",
        RULE.replace("above: 1", "between: 1-2"),
        "1-2",
        "rules[0].when.between: expected a list (`- item` lines, or [a, b]), got the text '1-2'",
    ),
    case(
        "path_type",
        "gateway: {state_dir: 5}\n",
        "5",
        "gateway.state_dir: expected a file path, got the number 5",
    ),
    case(
        "byte_size",
        "bridge: {spool: {max_bytes: lots}}\n",
        "lots",
        "bridge.spool.max_bytes: expected a size such as 256MiB, 64KiB, 1GB or a number of bytes, "
        "got the text 'lots'",
    ),
    case(
        "byte_size_unit",
        "bridge: {spool: {max_bytes: 5XB}}\n",
        "5XB",
        "bridge.spool.max_bytes: expected a size such as 256MiB, 64KiB, 1GB or a number of bytes, "
        "got the text '5XB'",
    ),
    case(
        "literal_error",
        "devices:\n  - {id: a, topic: a/b, profile: zigbe2mqtt}\n",
        "zigbe2mqtt",
        "devices[0].profile: unknown value 'zigbe2mqtt' (did you mean 'zigbee2mqtt'?): "
        "expected one of json, plain, zigbee2mqtt, tasmota, kv",
    ),
    case(
        "literal_error (a number for a text)",
        "mqtt: {protocol: 5}\n",
        "5",
        'mqtt.protocol: 5 must be written in quotes here: "5" (one of 3.1.1, 5)',
    ),
    case("too_short", RULE.replace("[{emit: {}}]", "[]"), "[]", "rules[0].then: must not be empty"),
    case(
        "too_long",
        RULE.replace("above: 1", "between: [1, 2, 3]"),
        "[1, 2, 3]",
        "rules[0].when.between: takes at most 2 items, got 3",
    ),
    case("string_too_short", 'mqtt: {client_id: ""}\n', '""', "mqtt.client_id: must not be empty"),
    case(
        "string_too_long",
        f"mqtt: {{client_id: {'x' * 70}}}\n",
        "xxx",
        "mqtt.client_id: must be at most 64 characters long, got 70",
    ),
    case(
        "greater_than",
        "mqtt: {command_hold_max_age: 0s}\n",
        "0s",
        "mqtt.command_hold_max_age: must be greater than 0, got 0",
    ),
    case("greater_than_equal", "mqtt: {port: 0}\n", "0", "mqtt.port: must be at least 1, got 0"),
    case("less_than_equal", "mqtt: {port: 70000}\n", "70000", "mqtt.port: must be at most 65535, got 70000"),
    case(
        "missing", "bridge: {kafka: {}}\n", "{}", "bridge.kafka.bootstrap: missing required key 'bootstrap'"
    ),
    case(
        "missing (a list item)",
        RULE.replace("above: 1", "between: [1]"),
        "[1]",
        "rules[0].when.between[1]: too few items: item 2 is missing",
    ),
    case(
        "value_error",
        "devices:\n  - {id: a b, topic: a/b}\n",
        "a b",
        "devices[0].id: device ids use letters, digits, '-' and '_'",
    ),
    case(
        "value_error (a duration without a unit)",
        RULE.replace("above: 1", "above: 1, for: 120"),
        "120",
        "rules[0].when.for: bad duration 120: it needs a unit, write 120s, 120m or 120h "
        "(a bare number could mean seconds or minutes)",
    ),
    case(
        "value_error (a topic with a space)",
        "bridge:\n  kafka: {bootstrap: k:9092, topics: {events: edgegw events}}\n",
        "edgegw events",
        "bridge.kafka.topics.events: invalid Kafka topic 'edgegw events': letters, digits, '.', '_' "
        "and '-' only (no spaces, no wildcards), at most 249 characters",
    ),
    case(
        "value_error (a space at the end of an MQTT topic level)",
        'devices:\n  - {id: a, topic: "tele/plug /SENSOR", profile: tasmota}\n',
        '"tele',
        "devices[0].topic: topic 'tele/plug /SENSOR' has a space at the start or end of a level: MQTT "
        "compares topics exactly, spaces included (spaces inside a name, as Zigbee2MQTT allows, are fine)",
    ),
    case(
        "value_error (a wildcard where none is allowed)",
        "actuators:\n  - {id: hall/light, topic: cmnd/hall/#}\n",
        "cmnd",
        "actuators[0].topic: the actuator's topic 'cmnd/hall/#' cannot hold the wildcards + or #: "
        "commands are published to one exact topic",
    ),
    case(
        "extra_forbidden", "gateway: {idd: x}\n", "idd", "gateway.idd: unknown key 'idd' (did you mean 'id'?)"
    ),
    case(
        "extra_forbidden (in a secret)",
        f"mqtt: {{username: gw, password: {{value: {SECRET}}}}}\n",
        "value",
        "mqtt.password.value: unknown key 'value': a secret is read from one of "
        "{credential: NAME} (systemd LoadCredential=), {file: PATH} (its first line) or {env: VARIABLE}",
    ),
    case(
        "union",
        "bridge:\n  kafka: {bootstrap: k:9092, producer_overrides: {linger.ms: [5]}}\n",
        "[5]",
        "bridge.kafka.producer_overrides.linger.ms: expected text, a number or true/false, got a list",
    ),
    case(
        "[key]",
        "devices:\n  - id: a\n    topic: a/b\n    fields: {1: temperature}\n",
        "1:",
        'devices[0].fields[1]: expected text, got the number 1 (put it in quotes: "1")',
    ),
]

SCENARIO = """\
rules: []
start: {start}
steps: [{{at: 0s, expect: []}}]
"""

# error types only rule scenarios meet (``edgegw rules test``)
SCENARIO_CASES: list[tuple[str, str, str]] = [
    ("datetime_type", "[1]", "2:8: start: expected a date and time such as 2026-01-05T08:00:00Z, got a list"),
    (
        "datetime_from_date_parsing",
        '"2026-13-05T08:00:00Z"',
        "2:8: start: expected a date and time such as 2026-01-05T08:00:00Z, got the text "
        "'2026-13-05T08:00:00Z' (month value is outside expected range of 1-12)",
    ),
    (
        "timezone_aware",
        '"2026-01-05T08:00:00"',
        "2:8: start: needs a time zone: end it with Z (UTC) or an offset such as +01:00",
    ),
]


def test_every_mapped_error_type_has_a_case() -> None:
    kinds = [c.values[0] for c in CASES] + [kind for kind, _, _ in SCENARIO_CASES]
    covered = {str(kind).split(" (")[0] for kind in kinds}
    assert set(MESSAGES) <= covered, sorted(set(MESSAGES) - covered)


def _errors(stderr: str) -> list[str]:
    return [line.removeprefix("error: ") for line in stderr.splitlines() if line.startswith("error: ")]


def locate(text: str, needle: str) -> str:
    """``line:column`` (1-based) of the first ``needle`` in ``text``."""
    before = text[: text.index(needle)]
    return f"{before.count(chr(10)) + 1}:{len(before) - before.rfind(chr(10))}"


@pytest.mark.parametrize(("kind", "text", "at", "message"), CASES)
def test_check_says_what_was_expected_in_yaml_terms(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
    text: str,
    at: str,
    message: str,
) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    path = tmp_path / "edgegw.yaml"
    path.write_text(text)
    assert main(["check", "--config", str(path)]) == 2, kind
    err = capsys.readouterr().err
    assert _errors(err) == [f"{path}:{locate(text, at)}: {message}"]
    assert "Input should" not in err
    assert SECRET not in err


@pytest.mark.parametrize(("kind", "start", "expected"), SCENARIO_CASES, ids=[c[0] for c in SCENARIO_CASES])
def test_scenarios_say_what_was_expected(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str, start: str, expected: str
) -> None:
    path = tmp_path / "scenario.yaml"
    path.write_text(SCENARIO.format(start=start))
    assert main(["rules", "test", str(path)]) == 2, kind
    assert _errors(capsys.readouterr().err) == [f"{path}:{expected}"]
