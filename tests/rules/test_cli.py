"""``edgegw rules check`` and ``edgegw rules test``: exit codes and what the user reads."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from gateway.cli import main

GOOD = """\
rules:
  - id: hot
    when: {sensor: living-room/temperature, above: 26, for: 2m}
    then:
      - set: living-room/ac
        to: {state: "on"}
"""

BAD = """\
rules:
  - id: one
    when:
      sensor: living-room/temperature
      abvoe: 26
      for: 2x
    then:
      - set: living-room/ac
        to: {state: "on"}
  - id: two
    when: {sensor: x/y, between: [25, 19]}
    then: [{set: x/z, to: {a: 1}}]
  - id: two
    when: {sensor: nodevice, above: 1}
    then: []
  - id: four
    when:
      all:
        - {sensor: a/b, above: 1, for: 1m}
    during: {after: sunset}
    cooldown: 10
    then: [{set: q/r, to: {a: 1}, for: 1m}]
"""

BAD_ERRORS = [
    "{f}:5:7: rules[0].when.abvoe: unknown key 'abvoe' (did you mean 'above'?)",
    "{f}:6:12: rules[0].when.for: bad duration '2x': write a number and a unit, such as 30s, 2m, 1h or 1h30m",
    "{f}:11:34: rules[1].when.between: between needs [lo, hi] with lo < hi, got [25.0, 19.0]",
    "{f}:13:9: rules[2].id: duplicate rule id 'two'",
    "{f}:14:20: rules[2].when.sensor: bad sensor, write device/metric (device: letters, digits, - and _): "
    "'nodevice'",
    "{f}:15:11: rules[2].then: must not be empty",
    "{f}:19:40: rules[3].when.all[0].for: `for` applies to the whole condition: put it at the top of `when`",
    "{f}:20:21: rules[3].during.after: sunrise/sunset need location.latitude and location.longitude",
    "{f}:21:15: rules[3].cooldown: bad duration 10: it needs a unit, write 10s, 10m or 10h "
    "(a bare number could mean seconds or minutes)",
    "{f}:22:12: rules[3].then[0]: a timed `set` needs both `for` and `revert`",
]


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def _errors(err: str) -> list[str]:
    return [line.removeprefix("error: ") for line in err.splitlines() if line.startswith("error: ")]


def test_check_valid_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, "rules.yaml", GOOD)
    assert main(["rules", "check", str(path)]) == 0
    assert capsys.readouterr().out == "ok: 1 rules in 1 file(s)\n"


def test_check_reports_every_error_with_file_line_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, "bad.yaml", BAD)
    assert main(["rules", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert _errors(err) == [line.format(f=path) for line in BAD_ERRORS]
    assert err.rstrip().endswith(f"{len(BAD_ERRORS)} errors")


@pytest.mark.parametrize(
    ("text", "error"),
    [
        pytest.param("rules: [\n", "2:1: invalid YAML:", id="bad YAML"),
        pytest.param("- a\n- b\n", "1:1: expected a mapping (key: value), got a list", id="not a mapping"),
        pytest.param(
            "rulez: []\n", "1:1: rulez: unknown key 'rulez' (did you mean 'rules'?)", id="unknown top key"
        ),
        pytest.param("{}\n", "1:1: rules: missing required key 'rules'", id="no rules"),
        pytest.param(
            "rules:\n  - id: a\n    when: {sensor: a/b, above: 1}\n    then: [{set: a/c, to: {x: 1}}]\n"
            "  - id: a\n    when: {sensor: a/b, above: 1}\n    then: [{set: a/c, to: {x: 1}}]\n",
            "5:9: rules[1].id: duplicate rule id 'a'",
            id="duplicate id at the second occurrence",
        ),
        pytest.param(
            "rules:\n  - id: a\n    when: {sensor: a/b, above: 3, below: 1}\n    then: [{emit: {}}]\n",
            "3:11: rules[0].when: contradictory thresholds: above 3.0 and below 1.0 never hold",
            id="contradictory above/below",
        ),
        pytest.param(
            "rules:\n  - id: a\n    when: {sensor: a/b, equals: x, hysteresis: 1}\n    then: [{emit: {}}]\n",
            "3:11: rules[0].when: hysteresis needs above, below or between, not equals",
            id="hysteresis with equals",
        ),
        pytest.param(
            "rules:\n  - id: a\n    when: {sensor: a/b}\n    then: [{emit: {severity: loud}}]\n",
            "3:11: rules[0].when: needs a threshold: above, below, between or equals (or stale)",
            id="no threshold",
        ),
        pytest.param(
            "rules:\n  - id: a\n    when: {sensor: a/b, above: 1}\n    then: [{emit: {severity: loud}}]\n",
            "4:30: rules[0].then[0].emit.severity: unknown value 'loud': expected one of debug, info, "
            "warning, error, critical",
            id="bad severity",
        ),
        pytest.param(
            "location: {timezone: Mars/Olympus}\nrules: []\n",
            "1:22: location.timezone: unknown time zone 'Mars/Olympus' (use an IANA name)",
            id="bad time zone",
        ),
    ],
)
def test_check_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, error: str) -> None:
    path = _write(tmp_path, "r.yaml", text)
    assert main(["rules", "check", str(path)]) == 2
    errors = _errors(capsys.readouterr().err)
    assert any(line.startswith(f"{path}:{error}") for line in errors), errors


def test_check_duplicate_ids_across_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first = _write(tmp_path, "a.yaml", GOOD)
    second = _write(tmp_path, "b.yaml", GOOD)
    assert main(["rules", "check", str(first), str(second)]) == 2
    assert _errors(capsys.readouterr().err) == [f"{second}:2:9: rules[0].id: duplicate rule id 'hot'"]


def test_check_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "check", str(tmp_path / "nope.yaml")]) == 2
    assert "cannot read file: No such file or directory" in capsys.readouterr().err


CONFIG = """\
devices:
  - living-room
  - id: kitchen
    metrics: [temperature]
actuators:
  - living-room/ac
  - {id: kitchen/fan}
"""

AGAINST_CONFIG = """\
rules:
  - id: a
    when: {sensor: living-room/temperature, above: 26}
    then: [{set: living-room/ac, to: {state: "on"}}]
  - id: b
    when:
      any:
        - {sensor: kitchen/humidity, above: 70}
        - {sensor: garage/temperature, above: 40}
    then:
      - set: kitchen/fan
        to: {state: "on"}
      - set: garage/door
        to: {state: "closed"}
"""


def test_check_against_a_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _write(tmp_path, "edgegw.yaml", CONFIG)
    rules = _write(tmp_path, "rules.yaml", AGAINST_CONFIG)
    assert main(["rules", "check", str(rules)]) == 0
    capsys.readouterr()
    assert main(["rules", "check", "--config", str(config), str(rules)]) == 2
    assert _errors(capsys.readouterr().err) == [
        f"{rules}:8:20: rules[1].when.any[0].sensor: unknown sensor 'kitchen/humidity': "
        "device 'kitchen' has no metric 'humidity'",
        f"{rules}:9:20: rules[1].when.any[1].sensor: unknown sensor 'garage/temperature': "
        "no device 'garage' in the config",
        f"{rules}:13:14: rules[1].then[1].set: unknown actuator 'garage/door': "
        "it is not declared in the config",
    ]


SCENARIO = """\
rules: rules.yaml
start: "2026-01-05T08:00:00Z"
steps:
  - at: 0s
    reading: {sensor: living-room/temperature, value: 25}
  - at: 30s
    reading: {sensor: living-room/temperature, value: 27}
  - at: 2m29s
    expect: []
  - at: 2m30s
    expect:
      - set: living-room/ac
        to: {state: "on"}
  - at: 5m
    expect: []
"""


def test_scenario_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write(tmp_path, "rules.yaml", GOOD)
    scenario = _write(tmp_path, "scenario.yaml", SCENARIO)
    assert main(["rules", "test", str(scenario)]) == 0
    assert capsys.readouterr().out == f"ok: {scenario} (3 expectations)\n"


def test_scenario_failure_shows_a_readable_diff(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write(tmp_path, "rules.yaml", GOOD)
    text = SCENARIO.replace("at: 2m30s", "at: 2m29s").replace('{state: "on"}', '{state: "on", target: 22}')
    scenario = _write(tmp_path, "scenario.yaml", text)
    assert main(["rules", "test", str(scenario)]) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"FAILED: {scenario}",
        f"{scenario}:11:5: steps[3].expect at 2m29s: expected actions differ",
        '  - missing: set living-room/ac to {"state": "on", "target": 22}',
        f"{scenario}:15:5: steps[4].expect at 5m: expected actions differ",
        '  + extra:   set living-room/ac to {"state": "on"} (rule hot, at 2m30s)',
    ]


INLINE = """\
start: "2026-01-05T08:00:00Z"
rules:
  - id: door
    when: {sensor: front/contact, equals: open, for: 1m}
    then:
      - set: hall/buzzer
        to: {state: "on"}
      - emit: {severity: warning, message: front door open}
steps:
  - {at: 0s, reading: {sensor: front/contact, value: open}}
  - at: 1m
    expect:
      - set: hall/buzzer
        to: {state: "on"}
      - emit: {severity: warning}
"""


def test_inline_rules_and_emits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scenario = _write(tmp_path, "s.yaml", INLINE)
    assert main(["rules", "test", str(scenario)]) == 0
    wrong = _write(tmp_path, "s2.yaml", INLINE.replace("{severity: warning}", "{severity: info}"))
    assert main(["rules", "test", str(wrong)]) == 1
    out = capsys.readouterr().out
    assert "  - missing: emit info" in out
    assert "  + extra:   emit warning 'front door open' (rule door, at 1m)" in out


def test_emits_are_ignored_when_the_expect_names_none(tmp_path: Path) -> None:
    text = INLINE.replace("      - emit: {severity: warning}\n", "")
    assert main(["rules", "test", str(_write(tmp_path, "s.yaml", text))]) == 0


@pytest.mark.parametrize(
    ("text", "error"),
    [
        pytest.param(
            INLINE.replace("at: 1m", "at: -1m"), "11:9: steps[1].at: bad duration '-1m'", id="bad at"
        ),
        pytest.param(
            INLINE.replace("{at: 0s,", "{at: 2m,"),
            "11:9: steps[1].at: `at` goes back in time: 1m after 2m",
            id="at decreases",
        ),
        pytest.param(
            INLINE.replace("value: open", "valu: open"),
            "10:47: steps[0].reading.valu: unknown key 'valu' (did you mean 'value'?)",
            id="bad key",
        ),
        pytest.param(
            INLINE.replace("above", "x").replace("equals: open", "equals: [1]"),
            "4:43: rules[0].when.equals",
            id="bad inline rule",
        ),
        pytest.param(
            INLINE.replace('"2026-01-05T08:00:00Z"', '"2026-01-05T08:00:00"'),
            "1:8: start: needs a time zone: end it with Z (UTC) or an offset such as +01:00",
            id="naive start",
        ),
        pytest.param(
            'rules: missing.yaml\nstart: "2026-01-05T08:00:00Z"\nsteps: [{at: 0s, expect: []}]\n',
            "missing.yaml: cannot read file",
            id="missing rules file",
        ),
    ],
)
def test_invalid_scenarios_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, error: str
) -> None:
    scenario = _write(tmp_path, "s.yaml", text)
    assert main(["rules", "test", str(scenario)]) == 2
    errors = _errors(capsys.readouterr().err)
    assert any(error in line for line in errors), errors


def test_worst_exit_code_wins(tmp_path: Path) -> None:
    good = _write(tmp_path, "good.yaml", INLINE)
    bad = _write(tmp_path, "bad.yaml", "steps: 3\n")
    assert main(["rules", "test", str(good), str(bad)]) == 2


def test_rules_without_subcommand_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules"]) == 2
    assert "check" in capsys.readouterr().out
