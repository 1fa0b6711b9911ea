"""The demo's embedded broker (amqtt) carries QoS 1 messages like a broker should."""

from __future__ import annotations

import threading

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from simulators.testbed.embedded import EmbeddedBroker, embedded_available

pytestmark = [
    pytest.mark.mqtt,
    pytest.mark.skipif(not embedded_available(), reason="amqtt (the demo extra) is not installed"),
]


def test_embedded_broker_roundtrip() -> None:
    with EmbeddedBroker() as broker:
        got: list[bytes] = []
        done = threading.Event()
        sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="sub")

        def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
            got.append(bytes(msg.payload))
            if len(got) == 10:
                done.set()

        subscribed = threading.Event()
        sub.on_message = on_message
        sub.on_subscribe = lambda *_a: subscribed.set()
        sub.connect(broker.host, broker.port)
        sub.subscribe("demo/x", qos=1)
        sub.loop_start()
        pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="pub")
        pub.connect(broker.host, broker.port)
        pub.loop_start()
        try:
            assert subscribed.wait(5)
            for i in range(10):
                pub.publish("demo/x", str(i).encode(), qos=1).wait_for_publish(5)
            assert done.wait(5)
        finally:
            pub.loop_stop()
            sub.loop_stop()
        assert got == [str(i).encode() for i in range(10)]
