"""``edgegw check`` reports every mistake in one run (issue 18, item 2).

Config, rules (inline and included), secrets, files and the state directory are checked
together, each problem at its ``file:line:column``, in file order; rules are checked
against the devices and actuators that validated, and one that failed is reported once,
not again at every rule that names it.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.config import load_config
from gateway.errors import ConfigError

SECRET = "hunter2-never-shown"

CONFIG = f"""\
gateway: {{state_dir: STATE}}
mqtt:
  port: 1883
  username: edgegw
  password: {SECRET}
  tls: {{ca_file: /nonexistent/edgegw/ca.pem}}
devices:
  - {{id: living-room, topic: zigbee2mqtt/living-room, profile: zigbe2mqtt}}
  - {{id: hall, topic: zigbee2mqtt/hall, profile: zigbee2mqtt}}
actuators:
  - {{id: living-room/ac, profile: zigbee2mqtt, name: living-room-ac}}
  - {{id: hall/light, profile: json, topic: cmnd/hall/#}}
bridge:
  kafka:
    bootstrap: kafka:9093
    topics: {{readings: edgegw readings}}
    security:
      protocol: SASL_SSL
      sasl: {{username: hall-pi, password: {{env: EDGEGW_TEST_NO_SUCH_VARIABLE}}}}
include: [more-rules.yaml, missing-rules.yaml]
rules:
  - id: hot
    when: {{sensor: living-room/temperature, above: 26, for: 120}}
    then: [{{set: kitchen/fan, to: {{state: "on"}}}}]
  - id: hall-lights
    when: {{sensor: hall/occupancy, equals: true}}
    then: [{{set: hall/light, to: {{state: "ON"}}}}]
log: {{level: verbose}}
http: {{port: nine}}
"""

MORE = """\
rules:
  - id: cold
    when: {sensor: hall/temperature, below: 18}
    then: [{set: hall/heater, to: {state: "on"}}]
  - id: hot
    when: {sensor: hall/temperature, above: 30}
    then: [{emit: {severity: warning}}]
"""


def locate(text: str, needle: str) -> str:
    before = text[: text.index(needle)]
    return f"{before.count(chr(10)) + 1}:{len(before) - before.rfind(chr(10))}"


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path, str]:
    monkeypatch.delenv("EDGEGW_TEST_NO_SUCH_VARIABLE", raising=False)
    (tmp_path / "not-a-dir").write_text("")
    text = CONFIG.replace("STATE", str(tmp_path / "not-a-dir" / "state"))
    config = tmp_path / "edgegw.yaml"
    config.write_text(text)
    more = tmp_path / "more-rules.yaml"
    more.write_text(textwrap.dedent(MORE))
    return config, more, text


def test_every_mistake_in_one_run(files: tuple[Path, Path, str], capsys: pytest.CaptureFixture[str]) -> None:
    config, more, text = files

    def c(needle: str, message: str) -> str:
        return f"{config}:{locate(text, needle)}: {message}"

    def m(needle: str, message: str) -> str:
        return f"{more}:{locate(MORE, needle)}: {message}"

    want = [
        c(
            str(config.parent / "not-a-dir"),
            f"gateway.state_dir: state directory {config.parent / 'not-a-dir' / 'state'} is not writable",
        ),
        # an inline secret: the three ways to write it, and never the value
        c(
            SECRET,
            "mqtt.password: a secret is never written in the config: name where to read it, "
            "{credential: NAME} (systemd LoadCredential=), {file: PATH} (its first line) or {env: VARIABLE}",
        ),
        # a file that is not there
        c("/nonexistent/edgegw", "mqtt.tls.ca_file: /nonexistent/edgegw/ca.pem does not exist"),
        # an unknown value: did you mean
        c(
            "zigbe2mqtt",
            "devices[0].profile: unknown value 'zigbe2mqtt' (did you mean 'zigbee2mqtt'?): "
            "expected one of json, plain, zigbee2mqtt, tasmota, kv",
        ),
        # a wildcard where none is allowed
        c(
            "cmnd/hall/#",
            "actuators[1].topic: the actuator's topic 'cmnd/hall/#' cannot hold the wildcards + or #: "
            "commands are published to one exact topic",
        ),
        # a topic with a space
        c(
            "edgegw readings",
            "bridge.kafka.topics.readings: invalid Kafka topic 'edgegw readings': letters, digits, '.', "
            "'_' and '-' only (no spaces, no wildcards), at most 249 characters",
        ),
        # a secret that cannot be read
        c(
            "{env: EDGEGW",
            "bridge.kafka.security.sasl.password: environment variable "
            "EDGEGW_TEST_NO_SUCH_VARIABLE is not set",
        ),
        # an included rules file that is not there
        c(
            "missing-rules.yaml",
            f"include[1]: rules file {config.parent / 'missing-rules.yaml'} does not exist",
        ),
        # a duration without a unit
        c(
            "120",
            "rules[0].when.for: bad duration 120: it needs a unit, write 120s, 120m or 120h "
            "(a bare number could mean seconds or minutes)",
        ),
        # an undeclared actuator (the device living-room failed, so its sensor is not reported)
        c(
            "kitchen/fan",
            "rules[0].then[0].set: unknown actuator 'kitchen/fan': it is not declared in the config",
        ),
        # rules[1] names hall/light, which failed validation above: not reported again
        c("verbose", "log.level: unknown value 'verbose': expected one of debug, info, warning, error"),
        # a wrong type, in YAML terms
        c("nine", "http.port: expected a whole number, got the text 'nine'"),
        # the included file: its own problems, and rule ids across both files
        m(
            "hall/heater",
            "rules[0].then[0].set: unknown actuator 'hall/heater': it is not declared in the config",
        ),
        m("hot", "rules[1].id: duplicate rule id 'hot'"),
    ]
    assert main(["check", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert [line.removeprefix("error: ") for line in err.splitlines() if line.startswith("error: ")] == want
    assert SECRET not in err


def test_run_gets_the_same_list(files: tuple[Path, Path, str]) -> None:
    """``edgegw run`` (load_config) refuses the file with every config and rule problem too."""
    config, _more, _text = files
    with pytest.raises(ConfigError) as info:
        load_config(config)
    messages = [i.message for i in info.value.issues]
    assert any("zigbe2mqtt" in m for m in messages)
    assert any("kitchen/fan" in m for m in messages)
    assert any("duplicate rule id 'hot'" in m for m in messages)
    assert not any("living-room/temperature" in m or "hall/light'" in m for m in messages)


def _issues(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "edgegw.yaml"
    path.write_text(textwrap.dedent(text))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return [str(i).removeprefix(f"{path}:") for i in info.value.issues]


RULE = """\
rules:
  - id: r
    when: {sensor: a/t, above: 1}
    during: {after: sunset}
    then: [{set: a/relay, to: {state: "on"}}]
"""


@pytest.mark.parametrize(
    ("sections", "root"),
    [
        pytest.param(
            "devices: [{id: a, topic: a/#/t}]\nactuators: [{id: a/relay, profile: tasmota}]\n"
            "location: {latitude: 52, longitude: 13}\n",
            [
                "1:26: devices[0].topic: invalid topic filter 'a/#/t': '#' must be a whole last level "
                "(e.g. a/b/#)",
                "2:13: actuators[0]: profile tasmota needs name (the device's name or topic)",
            ],
            id="invalid device and actuator",
        ),
        pytest.param(
            "devices: {id: a}\nactuators: a/relay\nlocation: {latitude: 52, longitude: 13}\n",
            [
                "1:10: devices: expected a list (`- item` lines, or [a, b]), got a mapping",
                "2:12: actuators: expected a list (`- item` lines, or [a, b]), got the text 'a/relay'",
            ],
            id="sections that are not lists",
        ),
        pytest.param(
            "devices: [{id: a, topic: a/t}]\nactuators: [{id: a/relay, topic: r}]\n"
            "location: {latitude: north}\n",
            ["3:22: location.latitude: expected a number, got the text 'north'"],
            id="invalid location",
        ),
    ],
)
def test_a_section_that_failed_is_the_only_error_not_every_rule_naming_it(
    tmp_path: Path, sections: str, root: list[str]
) -> None:
    assert _issues(tmp_path, sections + RULE) == root


def test_duplicate_device_and_actuator_ids_are_located_at_the_repeat(tmp_path: Path) -> None:
    text = """\
    devices:
      - {id: a, topic: a/t}
      - {id: a, topic: a/u}
    actuators:
      - {id: a/relay, topic: r}
      - {id: a/relay, topic: s}
    """
    assert _issues(tmp_path, text) == [
        "3:10: devices[1].id: duplicate device id 'a'",
        "6:10: actuators[1].id: duplicate actuator id 'a/relay'",
    ]


@pytest.mark.parametrize(
    ("text", "at", "key"),
    [
        ("mqtt: {port: x, username: u, password: {env: EDGEGW_TEST_UNSET}}\n", "{env", "mqtt.password"),
        (
            "bridge:\n  kafka:\n    bootstrap: k:9093\n    security:\n      protocol: SASL_SSL\n"
            "      sasl: {username: u, password: {env: EDGEGW_TEST_UNSET}}\n",
            "{env",
            "bridge.kafka.security.sasl.password",
        ),
        (
            "bridge:\n  kafka:\n    bootstrap: k:9093\n    security:\n      protocol: SSL\n"
            "      tls: {cert_file: /dev/null, key_file: /dev/null,\n"
            "            key_password: {env: EDGEGW_TEST_UNSET}}\n",
            "{env",
            "bridge.kafka.security.tls.key_password",
        ),
    ],
    ids=["mqtt (its section invalid too)", "kafka sasl", "kafka tls key"],
)
def test_every_secret_is_read_and_located(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    text: str,
    at: str,
    key: str,
) -> None:
    monkeypatch.delenv("EDGEGW_TEST_UNSET", raising=False)
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    path = tmp_path / "edgegw.yaml"
    path.write_text(text)
    assert main(["check", "--config", str(path)]) == 2
    errors = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error: ")]
    assert (
        f"error: {path}:{locate(text, at)}: {key}: environment variable EDGEGW_TEST_UNSET is not set"
        in errors
    )


PLAIN = """\
devices:
  - {id: hall, topic: home/hall, profile: json}
actuators:
  - {id: hall/fan, profile: plain, topic: home/hall-fan/set}
  - {id: hall/lamp, profile: json, topic: home/hall-lamp/set}
rules:
  - id: hot-hall
    when: {sensor: hall/temperature, above: 26}
    then:
      - {set: hall/fan, to: {state: "ON", speed: 3}}
      - {set: hall/lamp, to: {state: "ON", brightness: 3}}
"""


def test_a_payload_the_actuator_cannot_send_is_a_config_error_at_its_place(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "edgegw.yaml"
    config.write_text(f"gateway: {{state_dir: {tmp_path / 'state'}}}\n" + PLAIN)
    assert main(["check", "--config", str(config)]) == 2
    text = config.read_text()
    where = locate(text, '{state: "ON", speed')
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {config}:{where}: rules[0].then[0].to: a plain actuator takes one value "
        "(e.g. {state: ON}), got {'state': 'ON', 'speed': 3}",
    ]  # the json lamp takes both values: no error there
