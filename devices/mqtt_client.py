"""One paho-mqtt connection driven by the asyncio loop: connect, reconnect, read, write.

:class:`MqttLink` owns a paho client and its socket. It connects (blocking parts in a
worker thread), registers the socket with the event loop, reads *every* packet that is
ready per wakeup and hands the received messages to ``on_messages`` in one list,
reconnects with jittered exponential backoff, and sets ``TCP_NODELAY``. The MQTT source
and the MQTT actuators each run one.

The paho client itself is :class:`devices.paho_client.PahoClient` (buffered reads, lean
PUBLISH decoding, batched PUBACKs), or :class:`~devices.paho_client.PlainPahoClient` when the
installed paho is not the tested one (see :func:`devices.paho_client.make_client`).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.enums import MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import SecretStr

from common.backoff import Backoff
from devices.config import MqttConnection
from devices.paho_client import InMessage, PlainPahoClient, make_client
from gateway.errors import SourceError, SourceRefusedError

__all__ = ["InMessage", "MqttLink"]

_log = structlog.get_logger("edgegw.devices.mqtt")

MAX_PACKETS_PER_WAKEUP = 1000
"""Packets handled before the batch goes to the consumer (and its PUBACKs can leave):
small enough to keep the broker sending while we decode, and to let other tasks run."""
_REFUSED = {4, 5, 134, 135, 138}  # bad user name or password / not authorised / banned



class MqttLink:
    """A reconnecting MQTT connection on the running asyncio loop.

    ``on_connected(session_present)`` runs after every CONNACK (subscribe there);
    ``on_messages(list)`` gets every message read in one wakeup. ``generation`` counts
    connections: a message id is only valid for acks within its generation.
    """

    def __init__(
        self,
        conn: MqttConnection,
        *,
        password: SecretStr | None = None,
        client_id: str | None = None,
        persistent: bool = False,
        manual_ack: bool = False,
        on_connected: Callable[[bool], None] | None = None,
        on_messages: Callable[[list[InMessage]], None] | None = None,
        name: str = "mqtt",
        rand: Callable[[], float] | None = None,
    ) -> None:
        self.conn = conn
        self.client_id = client_id or conn.client_id
        self.persistent = persistent
        self.name = name
        self._password = password
        self._on_connected = on_connected
        self._on_messages = on_messages
        self._backoff = Backoff(conn.reconnect_min, conn.reconnect_max, rand=rand)
        self._log = _log.bind(link=name, broker=f"{conn.host}:{conn.effective_port}",
                              client_id=self.client_id)
        self.generation = 0
        self._connected = False
        self.since = time.time()
        """Wall-clock time the link last went up or down (the status page shows it)."""
        self._paused = False
        self._held = False
        self.busy_seconds = 0.0
        """Time spent reading and handing on messages (the consumer's work included)."""
        self.connects = 0
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fd: int | None = None
        self._writing = False
        self._more: asyncio.Handle | None = None
        """The pending read of what our buffer holds (see :meth:`_read_more`)."""
        self._continued = False
        """A continuation read ran since the selector last called :meth:`_readable`."""
        self._failed = False
        self._lost: asyncio.Future[None] | None = None
        self._connack: asyncio.Future[tuple[ReasonCode, bool]] | None = None
        self._wake: asyncio.Event | None = None
        self._misc: asyncio.TimerHandle | None = None
        self.client = self._make_client(manual_ack)

    @property
    def connected(self) -> bool:
        return self._connected

    @connected.setter
    def connected(self, value: bool) -> None:
        if value is not self._connected:
            self._connected = value
            self.since = time.time()

    # ------------------------------------------------------------------ set-up
    def _make_client(self, manual_ack: bool) -> PlainPahoClient:
        conn = self.conn
        if conn.protocol == "5":
            client = make_client(client_id=self.client_id, protocol=MQTTProtocolVersion.MQTTv5,
                                 manual_ack=manual_ack)
        else:
            client = make_client(client_id=self.client_id, clean_session=not self.persistent,
                                 protocol=MQTTProtocolVersion.MQTTv311, manual_ack=manual_ack)
        client.inbox_limit = MAX_PACKETS_PER_WAKEUP
        client.max_queued_messages_set(conn.max_queued_messages)
        client.max_inflight_messages_set(min(conn.max_queued_messages, 1000))
        client.connect_timeout = conn.connect_timeout
        if conn.username is not None:
            secret = self._password.get_secret_value() if self._password is not None else None
            client.username_pw_set(conn.username, secret)
        if conn.tls is not None:
            tls = conn.tls
            context = ssl.create_default_context(
                cafile=str(tls.ca_file) if tls.ca_file is not None else None
            )
            if tls.cert_file is not None and tls.key_file is not None:
                context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
            client.tls_set_context(context)
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_socket_open = self._socket_open
        client.on_socket_close = self._socket_close
        return client

    @staticmethod
    def _socket_open(_client: mqtt.Client, _userdata: Any, sock: Any) -> None:
        # paho leaves Nagle on; small PUBACKs and commands would wait for the kernel
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _socket_close(self, _client: mqtt.Client, _userdata: Any, _sock: Any) -> None:
        self._unregister()

    # ------------------------------------------------------------------ run
    async def run(self) -> None:
        """Connect and stay connected until :meth:`stop`.

        Raises :class:`SourceRefusedError` when the broker refuses the credentials or the
        TLS handshake fails verification (retrying would not help); everything else is
        logged and retried with backoff.
        """
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        while not self._stopping:
            try:
                await self._session()
            except SourceRefusedError:
                self._log.error("mqtt connection refused")
                raise
            except SourceError as exc:
                if self.stopping:
                    break
                delay = self._backoff.next()
                self._log.warning("mqtt connection failed", error=str(exc), retry_in=round(delay, 2),
                                  attempt=self._backoff.attempt)
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)

    @property
    def stopping(self) -> bool:
        return self._stopping

    def stop(self) -> None:
        """Disconnect cleanly (the persistent session stays on the broker)."""
        self._stopping = True
        if self._wake is not None:
            self._wake.set()
        if self.connected:
            self.client.disconnect()
            self._after_io()
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)

    async def _session(self) -> None:
        loop = self._loop
        assert loop is not None
        self._lost = loop.create_future()
        self._connack = loop.create_future()
        self._failed = False
        self.client.drop_buffer()
        await self._open(loop)
        try:
            result = await self._await_connack(self._connack, self._lost)
            if result is None:  # stopped while connecting
                return
            code, session_present = result
            if code.is_failure:
                if code.value in _REFUSED:
                    raise SourceRefusedError(
                        f"{self.name}: MQTT broker {self.conn.host}:{self.conn.effective_port} "
                        f"refused user {self.conn.username!r}: {code.getName()}"
                    )
                raise SourceError(f"{self.name}: broker refused the connection: {code.getName()}")
            self._log.info("mqtt connected", session_present=session_present,
                           protocol=self.conn.protocol, generation=self.generation)
            self._after_io()
            await self._lost
            if not self._stopping:
                raise SourceError(f"{self.name}: connection lost")
        finally:
            self._close_session()

    async def _open(self, loop: asyncio.AbstractEventLoop) -> None:
        """TCP (and TLS) connect and send CONNECT in a worker thread; watch the socket."""
        where = f"{self.conn.host}:{self.conn.effective_port}"
        try:
            await loop.run_in_executor(None, self._blocking_connect)
        except ssl.SSLCertVerificationError as exc:
            raise SourceRefusedError(f"{self.name}: TLS verification of {where} failed: "
                                     f"{exc.verify_message}") from exc
        except (OSError, ssl.SSLError) as exc:
            raise SourceError(f"{self.name}: cannot connect to {where}: {exc}") from exc
        sock = self.client.socket()
        if sock is None:
            raise SourceError(f"{self.name}: connection closed while connecting")
        self._fd = sock.fileno()
        if not self._paused and not self._held:
            loop.add_reader(self._fd, self._readable)
        self._after_io()
        self._schedule_misc()

    async def _await_connack(
        self, connack: asyncio.Future[tuple[ReasonCode, bool]], lost: asyncio.Future[None]
    ) -> tuple[ReasonCode, bool] | None:
        waiters: set[asyncio.Future[Any]] = {connack, lost}
        await asyncio.wait(waiters, timeout=self.conn.connect_timeout, return_when=asyncio.FIRST_COMPLETED)
        if connack.done():
            return connack.result()
        if self._stopping:
            return None
        if lost.done():
            raise SourceError(f"{self.name}: connection closed before the CONNACK")
        raise SourceError(f"{self.name}: no CONNACK within {self.conn.connect_timeout} s")

    def _close_session(self) -> None:
        self.connected = False
        if self._misc is not None:
            self._misc.cancel()
        if self.client.socket() is not None and self._stopping:
            # stopped while connecting: say goodbye (paho closes after DISCONNECT)
            self.client.disconnect()
        if self.client.socket() is not None:
            self.client._sock_close()  # a half-open or failed connection
        self._unregister()

    def _blocking_connect(self) -> None:
        conn = self.conn
        if conn.protocol == "5":
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = int(conn.session_expiry) if self.persistent else 0
            props.ReceiveMaximum = conn.receive_maximum
            self.client.connect(conn.host, conn.effective_port, keepalive=max(1, int(conn.keepalive)),
                                clean_start=not self.persistent, properties=props)
        else:
            self.client.connect(conn.host, conn.effective_port, keepalive=max(1, int(conn.keepalive)))

    # ------------------------------------------------------------------ callbacks (loop thread)
    def _handle_connect(self, _c: mqtt.Client, _u: Any, flags: mqtt.ConnectFlags,
                        code: ReasonCode, _p: Properties | None) -> None:
        # runs inside the read that got the CONNACK: messages behind it in the same read
        # already belong to the new connection, so switch generations here, not later
        session_present = bool(flags.session_present)
        if not code.is_failure:
            self.generation += 1
            self.connected = True
            self.connects += 1
            self._backoff.reset()
            if self._on_connected is not None:
                self._on_connected(session_present)
        if self._connack is not None and not self._connack.done():
            self._connack.set_result((code, session_present))

    def _handle_disconnect(self, _c: mqtt.Client, _u: Any, _f: mqtt.DisconnectFlags,
                           code: ReasonCode, _p: Properties | None) -> None:
        self.connected = False
        self._unregister()
        if self._lost is not None and not self._lost.done():
            if self._stopping:
                self._log.info("mqtt disconnected", reason=str(code))
            else:
                self._log.warning("mqtt disconnected", reason=str(code))
            self._lost.set_result(None)

    def _readable(self) -> None:
        if self._more is not None:
            return  # the pending continuation reads (one read of this link per iteration)
        if self._continued:
            # a continuation may have read in this very iteration (asyncio runs the handles
            # queued by call_soon before the selector's callbacks): read in the next one
            self._continued = False
            self._read_more()
            return
        self._read_now()

    def _read_on(self) -> None:
        self._more = None
        self._continued = True
        self._read_now()

    def _read_now(self) -> None:
        if self._paused or self._held:
            return
        began = time.perf_counter()
        try:
            self._read_all()
        finally:
            self.busy_seconds += time.perf_counter() - began

    def _read_all(self) -> None:
        client = self.client
        for _ in range(MAX_PACKETS_PER_WAKEUP):
            rc = client.loop_read()
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or client.socket() is None:
                self._deliver()
                self._connection_lost(rc)
                return
            if not client.buffered() or len(client.inbox) >= MAX_PACKETS_PER_WAKEUP:
                break
        self._deliver()
        if self._failed:
            return
        self._after_io()
        if client.buffered():
            # bytes wait in our buffer, where the selector cannot see them
            self._read_more()

    def _read_more(self) -> None:
        """Read on at the next loop iteration, after every other ready callback (the
        actuators' link, its PUBACKs above all). At most one such continuation is pending:
        each read that left bytes in the buffer used to schedule one more, on top of the
        selector's own callback, so under a backlog the reads of this link piled up in the
        ready queue (one more per iteration) and the other links waited seconds for a turn
        (measured at 40k QoS 0 readings/s: the commands' PUBACKs unread for 5 s, their
        queue full, commands dropped)."""
        if self._more is None and self._loop is not None and self._fd is not None:
            self._more = self._loop.call_soon(self._read_on)

    def _deliver(self) -> None:
        client = self.client
        if not client.inbox:
            return
        messages, client.inbox = client.inbox, []
        if self._on_messages is not None:
            try:
                self._on_messages(messages)
            except Exception as exc:  # noqa: BLE001 - not swallowed: run() raises it
                # a failing consumer (the sink) ends the link; the supervisor decides
                self._unregister()
                if self._lost is not None and not self._lost.done():
                    self._lost.set_exception(exc)
                    self._failed = True

    def _writable(self) -> None:
        rc = self.client.loop_write()
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._connection_lost(rc)
            return
        self._after_io()

    def _after_io(self) -> None:
        """Watch for writability only while paho has bytes to send."""
        loop, fd = self._loop, self._fd
        if loop is None or fd is None:
            return
        want = self.client.want_write()
        if want and not self._writing:
            loop.add_writer(fd, self._writable)
            self._writing = True
        elif not want and self._writing:
            loop.remove_writer(fd)
            self._writing = False

    def _schedule_misc(self) -> None:
        assert self._loop is not None
        self._misc = self._loop.call_later(min(1.0, max(0.1, self.conn.keepalive / 4)), self._tick)

    def _tick(self) -> None:
        rc = self.client.loop_misc()
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._connection_lost(rc)
            return
        self._after_io()
        self._schedule_misc()

    def _connection_lost(self, rc: MQTTErrorCode) -> None:
        self.connected = False
        self._unregister()
        if self._lost is not None and not self._lost.done():
            if not self._stopping:
                self._log.warning("mqtt connection lost", error=mqtt.error_string(rc))
            self._lost.set_result(None)

    def _unregister(self) -> None:
        if self._more is not None:
            self._more.cancel()
            self._more = None
        loop, fd = self._loop, self._fd
        if loop is None or fd is None:
            return
        loop.remove_reader(fd)
        if self._writing:
            loop.remove_writer(fd)
            self._writing = False
        self._fd = None

    # ------------------------------------------------------------------ API for users
    def pause_reading(self) -> None:
        """Take no more messages (before a graceful stop); writes, PUBACKs included, go on."""
        self._paused = True
        if self._loop is not None and self._fd is not None:
            self._loop.remove_reader(self._fd)

    def hold_reading(self, hold: bool) -> None:
        """Back-pressure: read nothing while ``hold`` (the broker's sends wait in TCP's
        buffers, then in its queue), read on when released. Writes (PUBACKs, pings) go on."""
        if hold == self._held:
            return
        self._held = hold
        loop, fd = self._loop, self._fd
        if loop is None or fd is None or self._paused:
            return
        if hold:
            loop.remove_reader(fd)
        else:
            loop.add_reader(fd, self._readable)
            if self.client.buffered():
                self._read_more()

    def drop(self, reason: str) -> None:
        """Close this connection now; :meth:`run` reconnects (with backoff). The broker then
        sends again every QoS 1 message it holds unacknowledged (persistent session)."""
        if not self.connected or self._lost is None or self._lost.done():
            return
        self._log.warning("mqtt connection dropped on purpose", reason=reason)
        self.connected = False
        self.client.disconnect()  # may call _handle_disconnect at once, which settles _lost
        self._after_io()
        if not self._lost.done():
            self._lost.set_result(None)

    @property
    def held(self) -> bool:
        return self._held

    def after_io(self) -> None:
        """Call after queueing packets outside a read (acks, publishes)."""
        self._after_io()
