"""The messages between edgegw run and its uplink process (bridge/uplink_protocol.py), the
socket channel that carries them and the uplink process's stop (a fake forwarder): pure."""

from __future__ import annotations

import json
import socket
import struct
import threading
from dataclasses import asdict

import pytest

from bridge.forwarder import ForwarderStats
from bridge.uplink_process import Channel, UplinkChild
from bridge.uplink_protocol import (
    MAX_FRAME,
    Busy,
    FrameDecoder,
    Message,
    ProtocolError,
    Ready,
    Rebase,
    Reply,
    Settle,
    Start,
    Stats,
    Status,
    Stop,
    decode,
    encode,
)

STATS = ForwarderStats(
    state="up",
    mode="exactly_once",
    shipped=5,
    heartbeats=1,
    dead_lettered=0,
    transactions=2,
    reconnects=1,
    last_error=None,
    last_shipped_at=1.5,
    backlog_rows=3,
    backlog_bytes=30,
    backlog_oldest_age=0.2,
    cursors={0: 4, 2: 9},
    yields=1,
    state_since=2.0,
)

MESSAGES: list[Message] = [
    Start(
        kafka={"bootstrap": "k:9092", "mode": "exactly_once"},
        gateway_id="gw",
        spool_path="/s/spool.db",
        spool_id="abc",
        lanes={0: 0, 1: 2},
        sasl_password="pw",
        ssl_key_password=None,
        log_level="debug",
        log_json=True,
        durable_seq=99,
    ),
    Ready(),
    Ready(1234),
    Busy(True),
    Status(
        depth=3,
        bytes=40,
        oldest_age=None,
        dead_letters=1,
        dropped={"overflow": 2},
        stored_lanes=[0, 2],
        extra={"bad_input": {"d1": {"json": 1}}},
    ),
    Stop(2.5),
    Reply(7, value=3),
    Reply(8, error="spool failed"),
    Stats(asdict(STATS)),
    Settle(0, {0: 4, 2: 9}, []),
    Settle(3, {}, [(5, 2, "too_large", "message too large")]),
    Rebase(4, 1000),
]


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_survives_the_wire(msg: Message) -> None:
    frame = encode(msg)
    (size,) = struct.unpack("!I", frame[:4])
    assert size == len(frame) - 4
    assert decode(frame[4:]) == msg


def test_forwarder_stats_come_back_whole() -> None:
    msg = decode(encode(Stats(asdict(STATS)))[4:])
    assert isinstance(msg, Stats)
    assert ForwarderStats(**msg.forwarder) == STATS  # int lane keys included


def test_the_decoder_cuts_a_stream_at_any_boundary() -> None:
    stream = b"".join(encode(m) for m in MESSAGES)
    for step in (1, 3, 7, 64, len(stream)):
        decoder = FrameDecoder()
        out: list[Message] = []
        for i in range(0, len(stream), step):
            out += decoder.feed(stream[i : i + step])
        assert out == MESSAGES
        assert decoder.pending == 0


def test_the_start_message_never_shows_its_secrets() -> None:
    start = MESSAGES[0]
    assert "pw" not in repr(start)
    assert "sasl_password" not in repr(start)


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "expected an object"),
        (b'{"t": "launch"}', "unknown message type"),
        (b'{"x": 1}', "unknown message type"),
        (b'{"t": "stop", "budget": 1, "extra": 2}', "unknown fields"),
        (b'{"t": "stop"}', "stop"),
        (b'{"t": "settle", "id": 1, "upto": {"a": 1}}', "settle.upto"),
        (b'{"t": "settle", "id": 1, "upto": {}, "dead": [[1, 2]]}', "settle.dead"),
        (b'{"t": "stats", "forwarder": 3}', "stats.forwarder"),
    ],
)
def test_a_bad_frame_is_a_protocol_error_not_a_crash(body: bytes, why: str) -> None:
    with pytest.raises(ProtocolError, match=why):
        decode(body)


def test_an_oversized_frame_is_refused_before_it_is_buffered() -> None:
    with pytest.raises(ProtocolError, match="too large"):
        FrameDecoder().feed(struct.pack("!I", MAX_FRAME + 1))


def test_a_heartbeat_field_json_cannot_carry_is_sent_as_text() -> None:
    class Odd:
        def __str__(self) -> str:
            return "odd"

    msg = decode(encode(Status(0, 0, None, 0, {}, [], extra={"x": Odd()}))[4:])
    assert isinstance(msg, Status)
    assert msg.extra == {"x": "odd"}
    assert json.loads(encode(Ready(7))[4:]) == {"t": "ready", "durable_seq": 7}


def test_a_send_the_peer_does_not_read_times_out_and_the_channel_stays_shut() -> None:
    """``SO_SNDTIMEO`` on the socket (the gateway sets it): a peer that stopped reading makes
    ``send`` return False, marked ``stalled`` (part of a frame may be out), never block."""
    ours, theirs = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", 0, 100_000))
    channel = Channel(ours)
    try:
        big = Status(0, 0, None, 0, {}, [], extra={"pad": "x" * 60_000})
        sent = 0
        while channel.send(big):
            sent += 1
            assert sent < 10_000, "the buffer never filled"
        assert channel.stalled
        theirs.recv(1 << 20)  # room again: still nothing more goes out on a broken stream
        assert not channel.send(Ready())
    finally:
        ours.close()
        theirs.close()


class _DrainingForwarder:
    """Drains until it is interrupted (or stopped)."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self._ended = threading.Event()

    def drain(self, budget: float) -> bool:
        self.calls.append("drain")
        self._ended.wait(30)
        self.calls.append("drained")
        return True

    def interrupt(self) -> None:
        self.calls.append("interrupt")
        self._ended.set()

    def stop(self, timeout: float = 30.0) -> None:
        self.calls.append("stop")
        self._ended.set()

    def stats(self) -> ForwarderStats:
        return STATS


def test_a_second_stop_cuts_the_drain_short_and_the_stop_path_joins() -> None:
    """SIGTERM during a drain: the forwarder is interrupted, and stopped (joined, producer
    closed) once, by the thread that drained it, not from the signal thread mid-send."""
    ours, theirs = socket.socketpair()
    forwarder = _DrainingForwarder()
    child = object.__new__(UplinkChild)  # without Kafka: the stop logic only
    vars(child).update(channel=Channel(ours), forwarder=forwarder, _stopping=threading.Lock(), _stopper=None,
                       _closing=False)  # fmt: skip
    try:
        child.stop(5.0)
        child.stop(0.0)
        assert child._stopper is not None
        child._stopper.join(10)
        assert not child._stopper.is_alive()
        assert forwarder.calls == ["drain", "interrupt", "drained", "stop"]
        assert child._closing
    finally:
        ours.close()
        theirs.close()
