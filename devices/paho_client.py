"""paho-mqtt clients for :class:`devices.mqtt_client.MqttLink`: a fast one over paho's
private members, and a plain one over its public API to fall back on.

:class:`PahoClient` is edgegw's hot path: buffered reads, lean PUBLISH decoding, batched
PUBACKs. It overrides or touches the private paho members listed in
:data:`PAHO_PRIVATE_NAMES` (each group says why):

- ``_sock_recv``: paho reads a packet with three ``recv`` calls (command byte, length,
  body); we read up to 256 KiB per ``recv`` and serve paho from that buffer, so one
  wakeup turns into many packets and one system call.
- ``_handle_publish`` / ``_handle_on_message``: paho builds an ``MQTTMessage`` (with a
  ``threading.Condition``, and on MQTT 5 a ``Properties`` object) and matches it against
  its per-topic callback table under two locks; we decode QoS 0/1 PUBLISH packets into a
  slotted :class:`InMessage` and append it to a list (routing is ours, once per batch).
- ``_ssl_wrap_socket``: paho's leaves the socket open when the TLS handshake fails.
- ``_packet_queue``: :meth:`PahoClient.ack_many` queues a batch of PUBACKs as one buffer
  (one ``send`` per batch instead of one per message).

Private members change without notice, so paho-mqtt is pinned to the minor versions the
tests cover (:data:`TESTED_PAHO`, the same range as in pyproject.toml), and
:func:`make_client` checks them at start: when the installed paho is outside that range,
or lacks one of the names, or an overridden method takes other parameters, it builds a
:class:`PlainPahoClient` instead (public paho API only, same interface, slower) and logs
one warning naming what differed.
"""

from __future__ import annotations

import inspect
import re
import socket
import ssl
import struct
import time
from typing import Any, NamedTuple

import paho.mqtt
import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion

__all__ = ["PAHO_PRIVATE_NAMES", "READ_CHUNK", "TESTED_PAHO", "InMessage", "PahoClient", "PahoPrivate",
           "PlainPahoClient", "make_client", "paho_differences"]

_log = structlog.get_logger("edgegw.devices.mqtt")

TESTED_PAHO = ((2, 2), (2, 3))
"""paho-mqtt versions the tests cover, from (inclusive) and to (exclusive): the pin in
pyproject.toml says the same (a test holds them together)."""


class PahoPrivate(NamedTuple):
    """A private member of paho that edgegw relies on, and how it must look."""

    owner: type
    name: str
    params: tuple[str, ...] | None = None
    """A method: its parameter names after ``self``. None: an attribute of a fresh instance."""
    override: bool = False
    """We override it, so paho calls ours: its parameters must be exactly ``params``. A
    method we only call needs ``params`` first and defaults for any others."""
    kind: type | tuple[type, ...] = object
    """An attribute: the type of its value on a fresh instance."""

    @property
    def label(self) -> str:
        return f"{self.owner.__name__}.{self.name}"


PAHO_PRIVATE_NAMES: tuple[PahoPrivate, ...] = (
    # Buffered reads: PahoClient._sock_recv reads READ_CHUNK bytes per recv and serves paho
    # from that buffer; PahoClient._packet_read decodes the whole PUBLISH packets in it
    # when no packet is half-read (_in_packet["command"] == 0) and then moves paho's
    # keepalive clock as paho's own reader would.
    PahoPrivate(mqtt.Client, "_sock_recv", ("bufsize",), override=True),
    PahoPrivate(mqtt.Client, "_packet_read", (), override=True),
    PahoPrivate(mqtt.Client, "_in_packet", kind=dict),
    PahoPrivate(mqtt.Client, "_last_bytes_received", kind=float),
    # Lean PUBLISH decoding: PahoClient._handle_publish decodes a QoS 0/1 PUBLISH that paho
    # read (_in_packet["packet"]) into an InMessage instead of an MQTTMessage; the MQTT 5
    # property block is skipped (_protocol); with automatic acks it sends the PUBACK
    # itself (_manual_ack, _send_puback), as paho does. QoS 2 messages still reach
    # _handle_on_message, which we override to fill the inbox (MQTTMessage._topic: the
    # topic's bytes, also when they are not UTF-8).
    PahoPrivate(mqtt.Client, "_handle_publish", (), override=True),
    PahoPrivate(mqtt.Client, "_handle_on_message", ("message",), override=True),
    PahoPrivate(mqtt.Client, "_protocol", kind=int),
    PahoPrivate(mqtt.Client, "_manual_ack", kind=bool),
    PahoPrivate(mqtt.Client, "_send_puback", ("mid",)),
    PahoPrivate(mqtt.MQTTMessage, "_topic", kind=bytes),
    # Batched PUBACKs: PahoClient.ack_many queues all of a batch's PUBACKs as one packet
    # buffer (one send) where paho's public ack() queues and sends one per message.
    PahoPrivate(mqtt.Client, "_packet_queue", ("command", "packet", "mid", "qos")),
    # TLS: paho's _ssl_wrap_socket leaks the socket when the handshake fails; ours closes
    # it. It needs the context given to tls_set_context(), which paho keeps privately.
    PahoPrivate(mqtt.Client, "_ssl_wrap_socket", ("tcp_sock",), override=True),
    PahoPrivate(mqtt.Client, "_ssl_context", kind=(type(None), ssl.SSLContext)),
    # MqttLink._close_session closes a half-open connection's socket: paho has no public
    # call for that (disconnect() needs a working connection).
    PahoPrivate(mqtt.Client, "_sock_close", ()),
)
"""Every private paho member PahoClient (and MqttLink) overrides, calls or reads."""


_MISSING = object()


def _paho_version() -> tuple[int, int] | None:
    match = re.match(r"(\d+)\.(\d+)", getattr(paho.mqtt, "__version__", ""))
    return (int(match[1]), int(match[2])) if match else None


def _method_difference(entry: PahoPrivate, member: object) -> str | None:
    assert entry.params is not None
    if not callable(member):
        return f"{entry.label} is not callable"
    try:
        params = list(inspect.signature(member).parameters.values())[1:]  # self
    except (TypeError, ValueError):
        return f"{entry.label} has no signature to check"
    names = tuple(p.name for p in params)
    wanted = entry.params
    if entry.override:
        ok = names == wanted
    else:
        rest = params[len(wanted):]
        ok = names[: len(wanted)] == wanted and all(
            p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in rest
        )
    return None if ok else f"{entry.label} takes ({', '.join(names)}), not ({', '.join(wanted)})"


def paho_differences(names: tuple[PahoPrivate, ...] = PAHO_PRIVATE_NAMES) -> list[str]:
    """What differs between the installed paho and the one PahoClient was written for: an
    untested version, a missing name, a method with other parameters, an attribute of
    another type, a name of ours that paho now uses itself. Empty when PahoClient is safe."""
    differences: list[str] = []
    version = _paho_version()
    low, high = TESTED_PAHO
    if version is None or not low <= version < high:
        differences.append(f"paho-mqtt {getattr(paho.mqtt, '__version__', '?')} is not "
                           f">={low[0]}.{low[1]},<{high[0]}.{high[1]}")
    probes: dict[type, object] = {
        mqtt.Client: mqtt.Client(CallbackAPIVersion.VERSION2, client_id="edgegw-probe"),
        mqtt.MQTTMessage: mqtt.MQTTMessage(0, b"edgegw/probe"),
    }
    for entry in names:
        member = getattr(entry.owner if entry.params is not None else probes[entry.owner], entry.name,
                         _MISSING)
        if member is _MISSING:
            differences.append(f"{entry.label} is missing")
        elif entry.params is not None:
            found = _method_difference(entry, member)
            if found is not None:
                differences.append(found)
        elif not isinstance(member, entry.kind):
            differences.append(f"{entry.label} is a {type(member).__name__}")
    client_probe = probes[mqtt.Client]
    differences += [f"Client.{name} exists in paho: it clashes with ours"
                    for name in sorted(_OUR_NAMES) if hasattr(client_probe, name)]
    return differences

READ_CHUNK = 256 * 1024
_PUBACK = struct.Struct("!BBH")
_U16 = struct.Struct("!H")
PUBACK = 0x40
PUBLISH = 0x30


class InMessage:
    """A received PUBLISH: what edgegw needs of it and nothing more."""

    __slots__ = ("dup", "mid", "payload", "qos", "raw_topic", "topic")

    def __init__(self, topic: str | None, raw_topic: bytes, payload: bytes, *, mid: int, qos: int,
                 dup: bool) -> None:
        self.topic = topic
        """None when the topic is not valid UTF-8 (``raw_topic`` has the bytes)."""
        self.raw_topic = raw_topic
        self.payload = payload
        self.mid = mid
        self.qos = qos
        self.dup = dup


def make_client(*, client_id: str, protocol: MQTTProtocolVersion, clean_session: bool | None = None,
                manual_ack: bool = False) -> PlainPahoClient:
    """The client for an :class:`~devices.mqtt_client.MqttLink`: a :class:`PahoClient` when
    the installed paho is the one it was written for, else a :class:`PlainPahoClient`,
    with one warning naming what differs (see :func:`paho_differences`)."""
    differences = paho_differences()
    client_class = PlainPahoClient if differences else PahoClient
    if differences:
        low, high = TESTED_PAHO
        _log.warning("paho-mqtt is not the tested one: plain paho client (slower, same acks)",
                     client_id=client_id, paho=getattr(paho.mqtt, "__version__", "?"),
                     tested=f">={low[0]}.{low[1]},<{high[0]}.{high[1]}", differences=differences)
    return client_class(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean_session,
                        protocol=protocol, manual_ack=manual_ack)


class PlainPahoClient(mqtt.Client):
    """What :class:`~devices.mqtt_client.MqttLink` needs of its client, over paho's public
    API only: received messages in ``inbox`` (from ``on_message``), ``ack_many``.

    The fallback when the installed paho differs from the tested one. paho reads each
    packet with three ``recv`` calls and builds an ``MQTTMessage`` for it, and
    :meth:`ack_many` sends one PUBACK per ``ack()``: slower than :class:`PahoClient`, with the
    same semantics (with ``manual_ack=True`` no PUBACK leaves before ``ack_many``).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.inbox: list[InMessage] = []
        self.inbox_limit = 1000
        """PahoClient stops decoding from its read buffer at this many messages until the
        inbox is emptied (paho hands over one message per packet read anyway)."""
        self.on_message = self._to_inbox

    def _to_inbox(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            topic: str | None = message.topic
        except UnicodeDecodeError:
            topic = None  # paho keeps the bytes private; Mosquitto refuses such topics anyway
        raw_topic = topic.encode("utf-8") if topic is not None else b""
        self.inbox.append(InMessage(topic, raw_topic, bytes(message.payload), mid=message.mid,
                                    qos=message.qos, dup=bool(message.dup)))

    def buffered(self) -> bool:
        """Whether bytes were read that the selector cannot see: TLS decrypts whole
        records, so the rest of one waits in the SSL object after paho's small reads."""
        sock = self.socket()
        return isinstance(sock, ssl.SSLSocket) and sock.pending() > 0

    def ack_many(self, mids: list[int]) -> None:
        """PUBACK every (QoS 1) message id in ``mids``, in order."""
        for mid in mids:
            self.ack(mid, 1)

    def drop_buffer(self) -> None:
        """Nothing to drop: paho resets its own reader on connect."""


class PahoClient(PlainPahoClient):
    """paho client with a read buffer, lean PUBLISH decoding and batched PUBACKs."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rbuf = b""
        self._rpos = 0

    def _sock_recv(self, bufsize: int) -> bytes:
        pos = self._rpos
        buf = self._rbuf
        if pos >= len(buf):
            data = super()._sock_recv(READ_CHUNK)  # BlockingIOError when nothing is there
            if not data:
                return data
            self._rbuf = buf = data
            pos = 0
        end = pos + bufsize
        self._rpos = min(end, len(buf))
        if pos == 0 and end >= len(buf):
            return buf
        return buf[pos:end]

    def _ssl_wrap_socket(self, tcp_sock: socket.socket) -> ssl.SSLSocket:
        # paho's version leaks the SSL socket when the handshake fails (bad CA, wrong host);
        # we always pass an SSLContext with check_hostname on, so the handshake verifies all
        context = self._ssl_context
        assert context is not None
        ssl_sock = context.wrap_socket(tcp_sock, server_hostname=self.host, do_handshake_on_connect=False)
        try:
            ssl_sock.settimeout(self.connect_timeout)
            ssl_sock.do_handshake()
        except BaseException:
            ssl_sock.close()
            raise
        return ssl_sock

    def buffered(self) -> bool:
        return self._rpos < len(self._rbuf) or super().buffered()

    def ack_many(self, mids: list[int]) -> None:
        """PUBACK every message id in ``mids``, in order, in one write.

        paho's ``ack()`` queues and sends one 4-byte packet per call (one system call
        each); a batch of PUBACKs is one buffer here. A PUBACK without reason code is
        valid in 3.1.1 and in 5 (remaining length 2 means "success, no properties").
        """
        if mids:
            pack = _PUBACK.pack
            self._packet_queue(PUBACK, b"".join([pack(0x40, 2, mid) for mid in mids]), 0, 0)

    def drop_buffer(self) -> None:
        self._rbuf = b""
        self._rpos = 0

    def _handle_on_message(self, message: mqtt.MQTTMessage) -> None:
        # QoS 2 deliveries still come this way (after PUBREL)
        try:
            topic: str | None = message.topic
        except UnicodeDecodeError:
            topic = None
        self.inbox.append(InMessage(topic, message._topic, bytes(message.payload), mid=message.mid,
                                    qos=message.qos, dup=bool(message.dup)))

    def _handle_publish(self) -> MQTTErrorCode:
        """PUBLISH (QoS 0 and 1) that paho read: straight into :class:`InMessage`. QoS 2 goes
        through paho."""
        command = self._in_packet["command"]
        if (command & 0x06) >> 1 > 1:
            return super()._handle_publish()
        packet = self._in_packet["packet"]
        message = self._decode_publish(command, packet, 0, len(packet))
        if message is None:
            return MQTTErrorCode.MQTT_ERR_PROTOCOL
        self.inbox.append(message)
        if message.qos and not self._manual_ack:
            return self._send_puback(message.mid)
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _decode_publish(self, command: int, buf: bytes | bytearray, pos: int, end: int) -> InMessage | None:
        """The QoS 0/1 PUBLISH whose variable header starts at ``buf[pos]`` and which ends at
        ``end``; None when it is malformed. paho's own decoding builds an ``MQTTMessage``
        (with a ``threading.Condition``, and on MQTT 5 a ``Properties`` object) per message,
        which costs more than everything edgegw does with it. We announce no topic aliases,
        so the topic is always in the packet; properties are skipped."""
        qos = (command & 0x06) >> 1
        try:
            (length,) = _U16.unpack_from(buf, pos)
            start = pos + 2
            pos = start + length
            if pos > end:
                return None
            raw_topic = bytes(buf[start:pos])
            mid = 0
            if qos:
                (mid,) = _U16.unpack_from(buf, pos)
                pos += 2
            if self._protocol == MQTTProtocolVersion.MQTTv5:
                props, shift = 0, 0
                while True:  # variable byte integer: the length of the properties
                    byte = buf[pos]
                    pos += 1
                    props |= (byte & 0x7F) << shift
                    shift += 7
                    if not byte & 0x80 or shift > 21:
                        break
                pos += props
            if pos > end:
                return None
            payload = bytes(buf[pos:end])
        except (struct.error, IndexError):
            return None
        try:
            topic: str | None = raw_topic.decode("utf-8")
        except UnicodeDecodeError:
            topic = None
        return InMessage(topic, raw_topic, payload, mid=mid, qos=qos, dup=bool(command & 0x08))

    def _packet_read(self) -> MQTTErrorCode:
        """Whole QoS 0/1 PUBLISH packets in the read buffer are decoded straight from it
        (paho reads a packet in three steps, byte by byte for the length); anything else,
        and a packet split across reads, goes through paho's reader."""
        if self._in_packet["command"] == 0 and self._rpos < len(self._rbuf) and self._publishes_from_buffer():
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        return super()._packet_read()

    def _publishes_from_buffer(self) -> int:
        buf = self._rbuf
        pos = self._rpos
        end = len(buf)
        inbox = self.inbox
        limit = self.inbox_limit
        decode = self._decode_publish
        taken = 0
        while pos < end and len(inbox) < limit:
            command = buf[pos]
            if command & 0xF0 != PUBLISH or command & 0x06 > 0x02:
                break  # not a QoS 0/1 PUBLISH: paho's turn
            p = pos + 1
            length = shift = 0
            while p < end and shift <= 21:
                byte = buf[p]
                p += 1
                length |= (byte & 0x7F) << shift
                shift += 7
                if not byte & 0x80:
                    break
            else:
                break  # the length runs past the buffer (or is malformed: paho says so)
            if p + length > end:
                break  # the packet continues in the next read
            message = decode(command, buf, p, p + length)
            if message is None:
                break  # malformed: paho reads it again and reports the protocol error
            inbox.append(message)
            pos = p + length
            taken += 1
            if message.qos and not self._manual_ack:
                self._send_puback(message.mid)
        if taken:
            self._rpos = pos
            self._last_bytes_received = time.monotonic()  # paho's keepalive clock
        return taken


_OUR_NAMES = frozenset(
    {"_rbuf", "_rpos", "inbox", "inbox_limit"}  # instance attributes
    | {name for cls in (PlainPahoClient, PahoClient) for name in vars(cls) if not name.startswith("__")}
) - {entry.name for entry in PAHO_PRIVATE_NAMES}
"""What our clients add to paho's Client: paho must not start using these names itself."""
