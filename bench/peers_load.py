"""The sensor load of ``bench.peers``: a raw MQTT 3.1.1 publisher, paced, one per child process.

paho spends ~9 us of CPU per QoS 0 publish here (plus its network thread): at 40k
readings/s that is close to half of one of the machine's two cores taken from the peer
under test. This publisher writes the PUBLISH packets itself (a few hundred ns each),
several per ``sendall`` (cold readings are batched until the next hot one or until the
pace says wait; a hot reading is stamped and sent at once), and reads PUBACKs in a thread
(QoS 1: at most ``window`` unacknowledged). At the end a PINGREQ: its PINGRESP says the
broker has handled every packet before it.

- :func:`publish_packet`, :func:`connect_packet`, :func:`varint`: the wire format (pure).
- :class:`RawPublisher`: the connection.
- :func:`run_job`: one job, paced (``LoadJob`` in, sends per command topic out).
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "LoadJob",
    "RawPublisher",
    "connect_packet",
    "is_hot",
    "publish_packet",
    "reading",
    "run_job",
    "varint",
]

HOT_EVERY = 10
HOT, COLD = 40.0, 20.0
PREFIX = "zigbee2mqtt"


def varint(n: int) -> bytes:
    """MQTT's remaining length."""
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(text: bytes) -> bytes:
    return struct.pack("!H", len(text)) + text


def connect_packet(client_id: str, keepalive: int = 600) -> bytes:
    body = _string(b"MQTT") + bytes([4, 0x02]) + struct.pack("!H", keepalive) + _string(client_id.encode())
    return b"\x10" + varint(len(body)) + body


def publish_packet(topic: bytes, payload: bytes, qos: int, packet_id: int = 0) -> bytes:
    head = _string(topic)
    if qos:
        head += struct.pack("!H", packet_id)
    return bytes([0x30 | (qos << 1)]) + varint(len(head) + len(payload)) + head + payload


def reading(value: float, sent_ns: int | None = None) -> bytes:
    if sent_ns is None:
        return b'{"temperature":%r,"linkquality":96}' % value
    return b'{"temperature":%r,"linkquality":96,"sent_ns":%d}' % (value, sent_ns)


def is_hot(j: int, k: int) -> bool:
    """Is reading ``k`` of the ``j``-th device hot? Every 10th, staggered by device (one
    reading in ten of the stream, not a burst of every device at once); never a device's
    first reading, so each hot reading is a crossing whatever the last run left."""
    return k > 0 and (k + j) % HOT_EVERY == HOT_EVERY - 1


class RawPublisher:
    """One MQTT 3.1.1 connection (clean session) that only publishes."""

    def __init__(self, port: int, qos: int, window: int = 1000) -> None:
        self.qos = qos
        self.window = window
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=15)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(connect_packet(f"bench-load-{uuid.uuid4().hex[:8]}"))
        if self._recv_exactly(4)[:1] != b"\x20":
            raise RuntimeError("no CONNACK")
        self.sock.settimeout(None)
        self.sent = 0  # QoS 1 packets written
        self.acked = 0
        self.pong = threading.Event()
        self._next_id = 0
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _recv_exactly(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("the broker closed the connection")
            data += chunk
        return data

    def _read(self) -> None:
        buf = b""
        while True:
            try:
                chunk = self.sock.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            while len(buf) >= 2:
                length, shift, pos = 0, 0, 1
                while pos < len(buf):
                    byte = buf[pos]
                    length |= (byte & 0x7F) << shift
                    shift += 7
                    pos += 1
                    if not byte & 0x80:
                        break
                else:
                    break
                if len(buf) < pos + length:
                    break
                kind = buf[0] & 0xF0
                if kind == 0x40:
                    self.acked += 1
                elif kind == 0xD0:
                    self.pong.set()
                buf = buf[pos + length :]

    def packet(self, topic: bytes, payload: bytes) -> bytes:
        if not self.qos:
            return publish_packet(topic, payload, 0)
        self._next_id = self._next_id % 65535 + 1
        self.sent += 1
        return publish_packet(topic, payload, 1, self._next_id)

    def write(self, packets: list[bytes]) -> None:
        """Send; with QoS 1 first wait while ``window`` packets are unacknowledged."""
        while self.qos and self.sent - self.acked > self.window:
            time.sleep(0.0002)
        self.sock.sendall(b"".join(packets))

    def finish(self, timeout: float = 60.0) -> None:
        """Wait until the broker has handled everything (PUBACKs, then a PINGRESP)."""
        deadline = time.monotonic() + timeout
        while self.qos and self.acked < self.sent and time.monotonic() < deadline:
            time.sleep(0.001)
        self.sock.sendall(b"\xc0\x00")
        self.pong.wait(max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendall(b"\xe0\x00")
        self.sock.close()


@dataclass(frozen=True)
class LoadJob:
    port: int
    devices: list[str]
    rate: float
    count: int
    qos: int


def run_job(job: LoadJob, topic_of: Callable[[str], str], ready: Callable[[], None]) -> dict[str, object]:
    """Publish ``job.count`` readings at ``job.rate`` round-robin over ``job.devices``; every
    10th reading of each device hot and stamped. ``ready`` is called once connected (it
    blocks until the start). Returns sent, elapsed (until the broker handled all) and the
    send times per command topic (``topic_of(device)``)."""
    pub = RawPublisher(job.port, job.qos)
    try:
        ready()
        devices = job.devices
        topics = [f"{PREFIX}/{d}".encode() for d in devices]
        n = len(devices)
        per = [0] * n
        sends: dict[str, list[int]] = {topic_of(d): [] for d in devices}
        lists = [sends[topic_of(d)] for d in devices]
        batch: list[bytes] = []
        began = time.monotonic()
        for i in range(job.count):
            wait = began + i / job.rate - time.monotonic()
            if wait > 0.0005:
                if batch:
                    pub.write(batch)
                    batch = []
                time.sleep(wait)
            j = i % n
            k = per[j]
            per[j] = k + 1
            if is_hot(j, k):
                sent = time.time_ns()
                lists[j].append(sent)
                batch.append(pub.packet(topics[j], reading(HOT + k * 1e-6, sent)))
                pub.write(batch)
                batch = []
            else:
                batch.append(pub.packet(topics[j], reading(COLD + k * 1e-6)))
        if batch:
            pub.write(batch)
        pub.finish()
        elapsed = time.monotonic() - began
    finally:
        pub.close()
    return {"sent": job.count, "elapsed": elapsed, "sends": sends}
