"""Actuators with an in-memory publisher: encoding per profile, declared-only, read-back."""

from __future__ import annotations

import json
from typing import Any

import pytest
from structlog.testing import capture_logs

from devices.actuators import Actuators, encode_command
from devices.config import ActuatorConfig
from gateway.errors import ActuatorError
from gateway.model import Command


class FakePublisher:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, int]] = []
        self.fail: str | None = None

    def publish(self, topic: str, payload: bytes, qos: int) -> None:
        if self.fail:
            raise ActuatorError(self.fail)
        self.sent.append((topic, payload, qos))


class FakeWriter:
    def __init__(self) -> None:
        self.lines: list[bytes] = []

    def write_line(self, line: bytes) -> None:
        self.lines.append(line)


def act(**kw: Any) -> ActuatorConfig:
    return ActuatorConfig.model_validate(kw)


@pytest.mark.parametrize(
    ("cfg", "payload", "expected"),
    [
        (
            act(id="lr/ac", profile="zigbee2mqtt", name="lr-ac"),
            {"state": "on", "target": 22},
            [("zigbee2mqtt/lr-ac/set", b'{"state":"on","target":22}')],
        ),
        (
            act(id="plug", profile="tasmota", name="plug1"),
            {"state": True, "Dimmer": 40},
            [("cmnd/plug1/POWER", b"ON"), ("cmnd/plug1/Dimmer", b"40")],
        ),
        (
            act(id="valve", profile="json", topic="home/valve/cmd"),
            {"open": False},
            [("home/valve/cmd", b'{"open":false}')],
        ),
        (act(id="fan", profile="plain", topic="home/fan/set"), {"state": "ON"}, [("home/fan/set", b"ON")]),
        (act(id="fan", profile="plain", topic="home/fan/set"), {"state": False}, [("home/fan/set", b"OFF")]),
        (
            act(id="valve", profile="plain", topic="v/set", payload_on="open", payload_off="close"),
            {"open": True},
            [("v/set", b"open")],
        ),
        (act(id="tv", profile="plain", topic="tv/volume"), {"value": 21.0}, [("tv/volume", b"21")]),
        (
            act(id="relay", transport="serial", profile="line", serial={"port": "/dev/x"}),
            {"relay": 1, "on": True},
            [("", b"relay=1,on=ON\n")],
        ),
        (
            act(id="relay", transport="serial", profile="json", serial={"port": "/dev/x"}),
            {"relay": 1},
            [("", b'{"relay":1}\n')],
        ),
    ],
)
def test_encoding(cfg: ActuatorConfig, payload: dict[str, Any], expected: list[tuple[str, bytes]]) -> None:
    assert encode_command(cfg, payload) == expected


@pytest.mark.parametrize("key", ["#", "a+b", "Power/1", "Backlog Power1 ON; Restart 1", ""])
def test_a_tasmota_command_name_cannot_reach_another_topic_or_command(key: str) -> None:
    """The key becomes the topic's last level (cmnd/<topic>/<key>): a remote command must not
    publish to a wildcard, another level, or a Backlog of several commands."""
    with pytest.raises(ActuatorError, match="is not a Tasmota command"):
        encode_command(act(id="plug", profile="tasmota", name="plug1"), {key: "ON"})


def test_unencodable_and_newlines_refused() -> None:
    with pytest.raises(ActuatorError, match="cannot encode"):
        encode_command(act(id="v", profile="json", topic="t"), {"x": float("nan")})
    with pytest.raises(ActuatorError, match="newline"):
        encode_command(act(id="r", transport="serial", profile="line", serial={"port": "/x"}), {"a": "1\n2"})


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"state": "ON", "brightness": 3}, "takes one value"),
        ({}, "takes one value"),
        ({"state": {"on": True}}, "a number, a boolean or a line of text"),
        ({"state": "ON\nOFF"}, "a number, a boolean or a line of text"),
    ],
)
def test_a_plain_actuator_takes_one_value_and_counts_the_rest_as_failed(
    payload: dict[str, Any], message: str
) -> None:
    pub = FakePublisher()
    acts = Actuators([act(id="fan", profile="plain", topic="home/fan/set")], publisher=pub)
    with pytest.raises(ActuatorError, match=message):
        acts.apply(Command("fan", payload, "r1", 0.0), 0.0)
    assert (pub.sent, acts.failed["fan"]) == ([], 1)


def test_a_plain_actuator_needs_its_topic_and_a_read_back_topic() -> None:
    with pytest.raises(ValueError, match="profile plain needs topic"):
        act(id="fan", profile="plain")
    with pytest.raises(ValueError, match=r"confirm on a plain actuator needs confirm\.state_topic"):
        act(id="fan", profile="plain", topic="f/set", confirm={"timeout": "2s"})


def test_plain_read_back_compares_the_whole_state_payload() -> None:
    def read_back(state_topic: str) -> dict[str, str]:
        return {"timeout": "5s", "state_topic": state_topic}

    acts = Actuators(
        [
            act(id="fan", profile="plain", topic="fan/set", confirm=read_back("fan/state")),
            act(id="tv", profile="plain", topic="tv/set", confirm=read_back("tv/volume")),
        ],
        publisher=FakePublisher(),
    )
    acts.apply(Command("fan", {"state": True}, "r", 0.0), now=100.0)
    acts.apply(Command("tv", {"volume": 21}, "r", 0.0), now=100.0)
    assert acts.on_state("fan/state", b"OFF", 101.0) == []
    assert acts.on_state("fan/state", b'{"state": "ON"}', 101.0) == []  # not the plain payload
    assert acts.on_state("fan/state", b"on\n", 101.0) == ["fan"]  # case and whitespace do not matter
    assert acts.on_state("tv/volume", b"21.0", 101.0) == ["tv"]
    assert (acts.confirmed["fan"], acts.confirmed["tv"], acts.check(200.0)) == (1, 1, [])


def test_only_declared_actuators() -> None:
    pub = FakePublisher()
    acts = Actuators([act(id="lamp", profile="json", topic="t")], publisher=pub)
    with pytest.raises(ActuatorError, match="not declared"):
        acts.apply(Command("heater", {"state": "on"}, "r1", 0.0), 0.0)
    assert pub.sent == []
    acts.apply(Command("lamp", {"state": "on"}, "r1", 0.0), 0.0)
    assert pub.sent == [("t", b'{"state":"on"}', 1)]
    assert acts.sent["lamp"] == 1


def test_delivery_failure_counted() -> None:
    pub = FakePublisher()
    pub.fail = "queue full"
    acts = Actuators([act(id="lamp", profile="json", topic="t")], publisher=pub)
    with pytest.raises(ActuatorError, match="queue full"):
        acts.apply(Command("lamp", {"state": "on"}, None, 0.0), 0.0)
    assert acts.failed["lamp"] == 1


def test_serial_actuator_writes_a_line() -> None:
    writer = FakeWriter()
    acts = Actuators(
        [act(id="relay", transport="serial", profile="line", serial={"port": "/x"})],
        writers={"relay": writer},
    )
    acts.apply(Command("relay", {"ch": 2, "on": True}, None, 0.0), 0.0)
    assert writer.lines == [b"ch=2,on=ON\n"]


def test_read_back_confirms_or_counts() -> None:
    pub = FakePublisher()
    acts = Actuators(
        [
            act(id="ac", profile="zigbee2mqtt", name="ac", confirm={"timeout": "5s"}),
            act(id="plug", profile="tasmota", name="p1", confirm={"timeout": 2}),
        ],
        publisher=pub,
    )
    assert acts.state_topics == ["stat/p1/RESULT", "zigbee2mqtt/ac"]
    acts.apply(Command("ac", {"state": "on", "target": 22}, "r", 0.0), now=100.0)
    acts.apply(Command("plug", {"power": True}, "r", 0.0), now=100.0)
    # a state without the new target does not confirm
    assert acts.on_state("zigbee2mqtt/ac", json.dumps({"state": "ON", "target": 20}).encode(), 101.0) == []
    assert acts.on_state("zigbee2mqtt/ac", json.dumps({"state": "ON", "target": 22}).encode(), 102.0) == [
        "ac"
    ]
    assert acts.on_state("stat/p1/RESULT", b"garbage", 101.0) == []
    with capture_logs() as logs:
        late = acts.check(103.0)
    assert [p.actuator for p in late] == ["plug"]
    assert (acts.confirmed["ac"], acts.unconfirmed["plug"]) == (1, 1)
    assert logs[0]["event"] == "command not confirmed"
    assert logs[0]["actuator"] == "plug"
    assert acts.check(200.0) == []
