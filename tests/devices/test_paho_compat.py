"""The private paho members PahoClient relies on, checked against the installed paho."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import MQTTErrorCode

from devices.paho_client import PAHO_PRIVATE_NAMES, TESTED_PAHO, PahoClient, paho_differences

ROOT = Path(__file__).resolve().parents[2]


def test_the_installed_paho_has_every_private_name_as_expected() -> None:
    assert paho_differences() == []


def test_the_pin_in_pyproject_is_the_tested_range() -> None:
    with (ROOT / "pyproject.toml").open("rb") as handle:
        dependencies = tomllib.load(handle)["project"]["dependencies"]
    (pin,) = [d for d in dependencies if d.startswith("paho-mqtt")]
    match = re.fullmatch(r"paho-mqtt>=(\d+)\.(\d+),<(\d+)\.(\d+)", pin.replace(" ", ""))
    assert match, pin
    low, high = (int(match[1]), int(match[2])), (int(match[3]), int(match[4]))
    assert (low, high) == TESTED_PAHO
    installed = tuple(int(x) for x in paho.mqtt.__version__.split(".")[:2])
    assert low <= installed < high


def test_the_list_names_every_private_paho_member_pahoclient_overrides() -> None:
    listed = {e.name for e in PAHO_PRIVATE_NAMES if e.owner is mqtt.Client}
    overridden = {name for name in vars(PahoClient) if name.startswith("_") and not name.startswith("__")
                  and hasattr(mqtt.Client, name)}
    assert overridden <= listed
    assert {e.name for e in PAHO_PRIVATE_NAMES if e.override} == overridden


def _drop_instance_attribute(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    original = mqtt.Client.__init__

    def init(self: mqtt.Client, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        delattr(self, name)

    monkeypatch.setattr(mqtt.Client, "__init__", init)


def _set_instance_attribute(monkeypatch: pytest.MonkeyPatch, name: str, value: object) -> None:
    original = mqtt.Client.__init__

    def init(self: mqtt.Client, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        setattr(self, name, value)

    monkeypatch.setattr(mqtt.Client, "__init__", init)


def _message_without_raw_topic(monkeypatch: pytest.MonkeyPatch) -> None:
    original = mqtt.MQTTMessage.__init__

    def init(self: mqtt.MQTTMessage, mid: int = 0, topic: bytes = b"") -> None:
        original(self, mid, topic)
        del self._topic

    monkeypatch.setattr(mqtt.MQTTMessage, "__init__", init)


def _no_sock_recv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(mqtt.Client, "_sock_recv")


def _renamed_parameter(monkeypatch: pytest.MonkeyPatch) -> None:
    def handle_on_message(self: mqtt.Client, msg: mqtt.MQTTMessage) -> None: ...
    monkeypatch.setattr(mqtt.Client, "_handle_on_message", handle_on_message)


def _new_parameter(monkeypatch: pytest.MonkeyPatch) -> None:
    def packet_read(self: mqtt.Client, limit: int = 1) -> MQTTErrorCode:
        return MQTTErrorCode.MQTT_ERR_SUCCESS
    monkeypatch.setattr(mqtt.Client, "_packet_read", packet_read)


def _required_parameter_on_a_called_method(monkeypatch: pytest.MonkeyPatch) -> None:
    def packet_queue(self: mqtt.Client, command: int, packet: bytes, mid: int, qos: int,
                     info: object) -> MQTTErrorCode:
        return MQTTErrorCode.MQTT_ERR_SUCCESS
    monkeypatch.setattr(mqtt.Client, "_packet_queue", packet_queue)


def _not_callable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mqtt.Client, "_send_puback", None)


def _untested_version(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(paho.mqtt, "__version__", "2.3.0")


def _clash(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mqtt.Client, "ack_many", lambda self, mids: None, raising=False)


@pytest.mark.parametrize(
    ("change", "difference"),
    [
        (_no_sock_recv, "Client._sock_recv is missing"),
        (_renamed_parameter, "Client._handle_on_message takes (msg), not (message)"),
        (_new_parameter, "Client._packet_read takes (limit), not ()"),
        (_required_parameter_on_a_called_method,
         "Client._packet_queue takes (command, packet, mid, qos, info), not (command, packet, mid, qos)"),
        (_not_callable, "Client._send_puback is not callable"),
        (lambda mp: _drop_instance_attribute(mp, "_in_packet"), "Client._in_packet is missing"),
        (lambda mp: _set_instance_attribute(mp, "_manual_ack", None), "Client._manual_ack is a NoneType"),
        (_message_without_raw_topic, "MQTTMessage._topic is missing"),
        (_untested_version, "paho-mqtt 2.3.0 is not >=2.2,<2.3"),
        (_clash, "Client.ack_many exists in paho: it clashes with ours"),
    ],
)
def test_each_kind_of_change_is_named(
    monkeypatch: pytest.MonkeyPatch, change: Callable[[pytest.MonkeyPatch], None], difference: str
) -> None:
    change(monkeypatch)
    assert paho_differences() == [difference]
