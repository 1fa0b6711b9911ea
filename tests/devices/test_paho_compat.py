"""The private paho members PahoClient relies on, checked against the installed paho, and
the plain-paho fallback when they differ (against the real test Mosquitto)."""

from __future__ import annotations

import asyncio
import re
import socket
import tomllib
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from pydantic import SecretStr
from structlog.testing import capture_logs

from devices.mqtt_client import MqttLink
from devices.mqtt_source import MqttSource
from devices.paho_client import (
    PAHO_PRIVATE_NAMES,
    TESTED_PAHO,
    InMessage,
    PahoClient,
    PlainPahoClient,
    make_client,
    paho_differences,
)
from simulators.generator import FleetGenerator
from simulators.testbed import Mosquitto
from tests.devices.conftest import Collector, device_configs, running, small_fleet, triples, until
from tests.devices.test_mqtt_source import conn_for, send

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


CHANGES = pytest.mark.parametrize(
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


@CHANGES
def test_each_kind_of_change_is_named(
    monkeypatch: pytest.MonkeyPatch, change: Callable[[pytest.MonkeyPatch], None], difference: str
) -> None:
    change(monkeypatch)
    assert paho_differences() == [difference]


def test_on_the_tested_paho_make_client_builds_the_fast_client_quietly() -> None:
    with capture_logs() as logs:
        client = make_client(client_id="t", protocol=MQTTProtocolVersion.MQTTv311, manual_ack=True)
    assert type(client) is PahoClient
    assert logs == []


@CHANGES
def test_any_difference_gives_the_plain_client_and_one_warning(
    monkeypatch: pytest.MonkeyPatch, change: Callable[[pytest.MonkeyPatch], None], difference: str
) -> None:
    change(monkeypatch)
    with capture_logs() as logs:
        client = make_client(client_id="t", protocol=MQTTProtocolVersion.MQTTv5, manual_ack=True)
    assert type(client) is PlainPahoClient
    assert [(e["log_level"], e["differences"]) for e in logs] == [("warning", [difference])]
    assert (client.buffered(), client.inbox) == (False, [])
    client.drop_buffer()


def test_the_plain_client_turns_paho_messages_into_inbox_messages() -> None:
    client = PlainPahoClient(CallbackAPIVersion.VERSION2, client_id="t", manual_ack=True)
    good = mqtt.MQTTMessage(7, "caf\u00e9/t".encode())
    good.payload, good.qos, good.dup = b"21.5", 1, True
    bad = mqtt.MQTTMessage(0, b"\xff\xfe")
    bad.payload = b"x"
    for message in (good, bad):
        assert client.on_message is not None
        client.on_message(client, None, message)
    assert [(m.topic, m.raw_topic, m.payload, m.qos, m.mid, m.dup) for m in client.inbox] == [
        ("caf\u00e9/t", "caf\u00e9/t".encode(), b"21.5", 1, 7, True),
        (None, b"", b"x", 0, 0, False),
    ]


# ---------------------------------------------------------------- the fallback on the real broker


@pytest.fixture
def plain_paho(monkeypatch: pytest.MonkeyPatch) -> None:
    """An untested paho version: every client is built as a PlainPahoClient."""
    monkeypatch.setattr(paho.mqtt, "__version__", "9.9.0")


async def _publish(broker: Mosquitto, messages: list[tuple[str, bytes]]) -> None:
    def run() -> None:
        pub = broker.client()
        pub.connect(broker.host, broker.port)
        pub.loop_start()
        try:
            for topic, payload in messages:
                pub.publish(topic, payload, qos=1).wait_for_publish(5)
        finally:
            pub.disconnect()
            pub.loop_stop()

    await asyncio.to_thread(run)


@pytest.mark.mqtt
@pytest.mark.usefixtures("plain_paho")
@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
async def test_the_plain_client_withholds_pubacks_until_ack_many(
    mosquitto: Mosquitto, topic_prefix: str, protocol: str
) -> None:
    """QoS 1 messages come with their topic, payload and id; without ack_many a reconnect
    brings them again (DUP), after ack_many it does not."""
    received: list[tuple[int, InMessage]] = []  # (generation, message)
    subscribed = asyncio.Event()

    def on_connected(_session_present: bool) -> None:
        subscribed.clear()
        link.client.subscribe(f"{topic_prefix}/#", qos=1)

    def on_messages(messages: list[InMessage]) -> None:
        received.extend((link.generation, m) for m in messages)

    conn = conn_for(mosquitto, protocol, reconnect_min=0.05, reconnect_max=0.2)
    with capture_logs() as logs:
        link = MqttLink(conn, persistent=True, manual_ack=True, on_connected=on_connected,
                        on_messages=on_messages, name="plain")
    assert type(link.client) is PlainPahoClient
    assert [e["log_level"] for e in logs] == ["warning"]
    link.client.on_subscribe = lambda *_a: subscribed.set()

    async def reconnect() -> None:
        connects = link.connects
        sock = link.client.socket()
        assert isinstance(sock, socket.socket)
        sock.shutdown(socket.SHUT_WR)  # the broker reads what we sent, then sees us go
        await until(lambda: link.connects > connects and link.connected and subscribed.is_set())

    def of(generation: int) -> list[InMessage]:
        return [m for g, m in received if g == generation]

    sent = [(f"{topic_prefix}/{i}", f"payload {i}".encode()) for i in range(20)]
    task = asyncio.create_task(link.run())
    try:
        await until(lambda: link.connected and subscribed.is_set())
        first = link.generation
        await _publish(mosquitto, sent)
        await until(lambda: len(of(first)) >= len(sent))
        assert [(m.topic, m.raw_topic, m.payload, m.qos, m.dup) for m in of(first)] == [
            (topic, topic.encode(), payload, 1, False) for topic, payload in sent
        ]
        assert len({m.mid for m in of(first)}) == len(sent)

        await reconnect()  # nothing acked: all of them again, as DUP
        second = link.generation
        await until(lambda: len(of(second)) >= len(sent))
        assert [(m.topic, m.payload, m.qos, m.dup) for m in of(second)] == [
            (topic, payload, 1, True) for topic, payload in sent
        ]
        link.client.ack_many([m.mid for m in of(second)])
        link.after_io()

        await reconnect()  # all acked: only what is new arrives
        third = link.generation
        await _publish(mosquitto, [(f"{topic_prefix}/marker", b"end")])
        await until(lambda: len(of(third)) >= 1)
        assert [(m.topic, m.dup) for m in of(third)] == [(f"{topic_prefix}/marker", False)]
    finally:
        link.stop()
        await asyncio.wait_for(task, 10)


@pytest.mark.mqtt
@pytest.mark.usefixtures("plain_paho")
async def test_the_plain_client_reads_a_burst_over_tls(mosquitto_tls: Mosquitto) -> None:
    """Over TLS paho's own socket wrapping and reads serve the fallback (buffered() looks at
    the bytes waiting in the SSL object; Mosquitto sends one TLS record per packet, so this
    run does not depend on it)."""
    user, password = next(iter(mosquitto_tls.users.items()))
    spec = small_fleet(5)
    collector = Collector()
    conn = conn_for(mosquitto_tls, "5", username=user, password={"env": "UNUSED"}, keepalive=600)
    source = MqttSource(conn, device_configs(spec), collector, password=SecretStr(password))
    assert type(source.link.client) is PlainPahoClient
    async with running(source):
        assert mosquitto_tls.tls_files is not None
        sent = await send(mosquitto_tls, 300, spec, protocol="5", username=user, password=password,
                          ca_file=str(mosquitto_tls.tls_files.ca_cert))
        want = Counter((m.device_id, k, v) for m in FleetGenerator(spec, spec.devices()).take(sent)
                       for k, v in m.readings)
        await collector.wait_for(sum(want.values()), within=20)
        await until(lambda: source.acked == sent)
    assert Counter(triples(collector.readings)) == want
