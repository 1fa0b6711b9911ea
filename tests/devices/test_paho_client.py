"""The lean PUBLISH decoder of the MQTT link, against packets built here (no broker)."""

from __future__ import annotations

import socket
import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion

from devices.paho_client import PahoClient


def client(v5: bool) -> PahoClient:
    protocol = MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311
    return PahoClient(CallbackAPIVersion.VERSION2, client_id="t", protocol=protocol, manual_ack=True)


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def feed(c: PahoClient, command: int, body: bytes) -> MQTTErrorCode:
    c._in_packet = {"command": command, "have_remaining": 1, "remaining_count": [], "remaining_mult": 1,
                    "remaining_length": len(body), "packet": bytearray(body), "to_process": 0, "pos": 0}
    return c._handle_publish()


@settings(max_examples=200, deadline=None)
@given(topic=st.text(min_size=1, max_size=40).filter(lambda t: "\x00" not in t),
       payload=st.binary(max_size=200), qos=st.sampled_from([0, 1]), dup=st.booleans(),
       v5=st.booleans(), props=st.binary(max_size=300), mid=st.integers(1, 65535))
def test_publish_round_trip(topic: str, payload: bytes, qos: int, dup: bool, v5: bool, props: bytes,
                            mid: int) -> None:
    raw = topic.encode()
    body = struct.pack("!H", len(raw)) + raw + (struct.pack("!H", mid) if qos else b"")
    if v5:
        body += varint(len(props)) + props
    body += payload
    c = client(v5)
    assert feed(c, 0x30 | (qos << 1) | (0x08 if dup else 0), body) == MQTTErrorCode.MQTT_ERR_SUCCESS
    (msg,) = c.inbox
    assert (msg.topic, msg.payload, msg.qos, msg.dup) == (topic, payload, qos, dup)
    assert msg.mid == (mid if qos else 0)


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=100), qos=st.sampled_from([0, 1]), v5=st.booleans())
def test_garbage_packets_never_raise(body: bytes, qos: int, v5: bool) -> None:
    c = client(v5)
    rc = feed(c, 0x30 | (qos << 1), body)
    assert rc in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_PROTOCOL)
    assert len(c.inbox) == (1 if rc == MQTTErrorCode.MQTT_ERR_SUCCESS else 0)


def test_invalid_utf8_topic_is_kept_raw() -> None:
    c = client(False)
    assert feed(c, 0x30, b"\x00\x02\xff\xfe" + b"1") == MQTTErrorCode.MQTT_ERR_SUCCESS
    assert (c.inbox[0].topic, c.inbox[0].raw_topic) == (None, b"\xff\xfe")


def test_truncated_packets_are_protocol_errors() -> None:
    assert feed(client(False), 0x30, b"\x00\x09abc") == MQTTErrorCode.MQTT_ERR_PROTOCOL
    assert feed(client(False), 0x32, b"\x00\x01a\x00") == MQTTErrorCode.MQTT_ERR_PROTOCOL
    assert feed(client(True), 0x30, b"\x00\x01a\x05\x01") == MQTTErrorCode.MQTT_ERR_PROTOCOL


def publish_packet(topic: str, payload: bytes, qos: int, mid: int, v5: bool, props: bytes = b"") -> bytes:
    raw = topic.encode()
    body = struct.pack("!H", len(raw)) + raw + (struct.pack("!H", mid) if qos else b"")
    if v5:
        body += varint(len(props)) + props
    body += payload
    return bytes([0x30 | (qos << 1)]) + varint(len(body)) + body


@settings(max_examples=150, deadline=None)
@given(messages=st.lists(st.tuples(st.binary(max_size=300), st.sampled_from([0, 1]), st.booleans()),
                         min_size=1, max_size=40),
       cuts=st.lists(st.integers(1, 400), min_size=1, max_size=60), v5=st.booleans())
def test_a_stream_cut_anywhere_decodes_every_message_in_order(
    messages: list[tuple[bytes, int, bool]], cuts: list[int], v5: bool
) -> None:
    # whole packets in the read buffer take the fast path, the rest (split packets, a
    # PINGRESP between them) paho's reader: together every message, once, in order
    stream = b""
    for i, (payload, qos, ping_after) in enumerate(messages):
        stream += publish_packet(f"t/{i}", payload, qos, i + 1, v5, b"\x01\x01" if v5 and i % 3 == 0 else b"")
        if ping_after:
            stream += b"\xd0\x00"  # PINGRESP
    c = client(v5)
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    c._sock = ours
    try:
        pos, k = 0, 0
        while pos < len(stream):
            size = cuts[k % len(cuts)]
            k += 1
            theirs.sendall(stream[pos : pos + size])
            pos += size
            for _ in range(200):
                assert c.loop_read() == MQTTErrorCode.MQTT_ERR_SUCCESS
                if not c.buffered():
                    break
        for _ in range(200):  # what the last send left in the socket
            c.loop_read()
    finally:
        c._sock = None
        ours.close()
        theirs.close()
    assert [(m.topic, m.payload, m.qos, m.mid) for m in c.inbox] == [
        (f"t/{i}", payload, qos, i + 1 if qos else 0) for i, (payload, qos, _) in enumerate(messages)
    ]
