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


def test_unencodable_and_newlines_refused() -> None:
    with pytest.raises(ActuatorError, match="cannot encode"):
        encode_command(act(id="v", profile="json", topic="t"), {"x": float("nan")})
    with pytest.raises(ActuatorError, match="newline"):
        encode_command(act(id="r", transport="serial", profile="line", serial={"port": "/x"}), {"a": "1\n2"})


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
