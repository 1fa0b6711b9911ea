"""The Mosquitto of the test bed is a real broker: QoS 1, persistence, TLS and passwords."""

from __future__ import annotations

import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from simulators.testbed import Mosquitto

pytestmark = pytest.mark.mqtt


class _Collector:
    """Subscribes at QoS 1 and records (topic, payload, qos) until ``expected`` arrived."""

    def __init__(self, client: mqtt.Client, topic: str, expected: int) -> None:
        self.client = client
        self.topic = topic
        self.expected = expected
        self.messages: list[tuple[str, bytes, int]] = []
        self.subscribed = threading.Event()
        self.done = threading.Event()
        client.on_connect = self._on_connect
        client.on_subscribe = lambda *_a: self.subscribed.set()
        client.on_message = self._on_message

    def _on_connect(self, client: mqtt.Client, *_args: object) -> None:
        client.subscribe(self.topic, qos=1)

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        self.messages.append((msg.topic, bytes(msg.payload), msg.qos))
        if len(self.messages) >= self.expected:
            self.done.set()


def _publish_all(
    broker: Mosquitto,
    topic: str,
    payloads: list[bytes],
    *,
    username: str | None = None,
    password: str | None = None,
) -> None:
    pub = broker.client(username=username, password=password)
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    try:
        infos = [pub.publish(topic, p, qos=1) for p in payloads]
        for info in infos:
            info.wait_for_publish(timeout=10)
            assert info.is_published()
    finally:
        pub.disconnect()
        pub.loop_stop()


def test_qos1_publish_subscribe_roundtrip(mosquitto: Mosquitto, topic_prefix: str) -> None:
    topic = f"{topic_prefix}/sensor"
    payloads = [f'{{"n": {i}}}'.encode() for i in range(200)]
    sub = mosquitto.client()
    collector = _Collector(sub, topic, len(payloads))
    sub.connect(mosquitto.host, mosquitto.port)
    sub.loop_start()
    try:
        assert collector.subscribed.wait(10)
        _publish_all(mosquitto, topic, payloads)
        assert collector.done.wait(10), f"got {len(collector.messages)} of {len(payloads)}"
    finally:
        sub.disconnect()
        sub.loop_stop()
    assert [m[1] for m in collector.messages] == payloads  # all, once, in order
    assert {m[2] for m in collector.messages} == {1}


def test_offline_session_queue_survives_broker_restart(mosquitto_workdir: Path, topic_prefix: str) -> None:
    """More than Mosquitto's default 100 queued QoS 1 messages survive a restart."""
    broker = Mosquitto(mosquitto_workdir).start()
    topic = f"{topic_prefix}/queued"
    payloads = [str(i).encode() for i in range(500)]
    try:
        # 1. a persistent session subscribes, then goes away
        sub = broker.client("gateway-under-test", clean_session=False)
        collector = _Collector(sub, topic, len(payloads))
        sub.connect(broker.host, broker.port)
        sub.loop_start()
        assert collector.subscribed.wait(10)
        sub.disconnect()
        sub.loop_stop()
        # 2. messages arrive while it is offline, then the broker restarts
        _publish_all(broker, topic, payloads)
        broker.restart()
        # 3. the session comes back and gets every queued message
        sub2 = broker.client("gateway-under-test", clean_session=False)
        collector2 = _Collector(sub2, topic, len(payloads))
        sub2.on_connect = lambda *_a: None  # the session already holds the subscription
        sub2.connect(broker.host, broker.port)
        sub2.loop_start()
        try:
            assert collector2.done.wait(15), f"got {len(collector2.messages)} of {len(payloads)}"
        finally:
            sub2.disconnect()
            sub2.loop_stop()
        assert [m[1] for m in collector2.messages] == payloads
    finally:
        broker.stop()


def _connect_result(broker: Mosquitto, username: str, password: str) -> ReasonCode | None:
    """Connect with these credentials; return the CONNACK reason code (None: no answer)."""
    client = broker.client(username=username, password=password)
    result: list[ReasonCode] = []
    answered = threading.Event()

    def on_connect(_c: mqtt.Client, _u: object, _f: object, rc: ReasonCode, _p: object) -> None:
        result.append(rc)
        answered.set()

    client.on_connect = on_connect
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        answered.wait(10)
    finally:
        client.disconnect()
        client.loop_stop()
    return result[0] if result else None


def test_tls_broker_refuses_wrong_password(mosquitto_tls: Mosquitto) -> None:
    rc = _connect_result(mosquitto_tls, "edgegw", "not-the-password")
    assert rc is not None
    assert rc.is_failure
    assert rc.getName() in {"Not authorized", "Bad user name or password"}


def test_tls_broker_accepts_right_password_and_carries_messages(
    mosquitto_tls: Mosquitto, topic_prefix: str
) -> None:
    user, password = next(iter(mosquitto_tls.users.items()))
    rc = _connect_result(mosquitto_tls, user, password)
    assert rc is not None
    assert not rc.is_failure
    topic = f"{topic_prefix}/tls"
    sub = mosquitto_tls.client(username=user, password=password)
    collector = _Collector(sub, topic, 3)
    sub.connect(mosquitto_tls.host, mosquitto_tls.port)
    sub.loop_start()
    try:
        assert collector.subscribed.wait(10)
        _publish_all(mosquitto_tls, topic, [b"a", b"b", b"c"], username=user, password=password)
        assert collector.done.wait(10)
    finally:
        sub.disconnect()
        sub.loop_stop()
    assert [m[1] for m in collector.messages] == [b"a", b"b", b"c"]


def test_tls_broker_refuses_plain_tcp(mosquitto_tls: Mosquitto) -> None:
    """A client that skips TLS never gets a CONNACK from the TLS listener."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="plain-to-tls")
    user, password = next(iter(mosquitto_tls.users.items()))
    client.username_pw_set(user, password)
    connected = threading.Event()
    client.on_connect = lambda *_a: connected.set()
    try:
        client.connect(mosquitto_tls.host, mosquitto_tls.port)
        client.loop_start()
        assert not connected.wait(2)
    except OSError:
        pass  # the broker closing the socket at once is a refusal too
    finally:
        client.loop_stop()
