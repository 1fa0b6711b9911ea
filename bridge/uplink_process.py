"""The uplink process: ``python -P -m bridge.uplink_process --fd N``, started by ``edgegw run``.

It runs the Kafka :class:`~bridge.forwarder.Forwarder` out of the gateway's interpreter, so
its Python work (envelopes, librdkafka calls) never competes for the GIL with the event
loop that runs rules and commands, and ``confluent_kafka`` is loaded here only.

The forwarder works against a :class:`SpoolClient`: it reads the spool file on a
read-only connection of its own, and sends every write (settle, rebase) over the socket
``N`` (one end of a socket pair) to ``edgegw run``, whose spool writer thread applies it:
one process writes the file. The messages are :mod:`bridge.uplink_protocol`'s.

Life cycle: SIGINT is ignored (Ctrl-C in a terminal reaches the whole process group; the
gateway stops its uplink in order). :class:`~bridge.uplink_protocol.Stop` from the parent:
ship what is committed within the budget, then exit 0. SIGTERM: stop now, finishing the
transaction in flight. The parent gone (EOF on the socket, or PR_SET_PDEATHSIG): exit.
A settle the parent never applied is harmless: the rows stay in the spool, are sent
again, and the exactly-once checkpoint (at-least-once: the consumer) drops them.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import itertools
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import structlog

from bridge.config import KafkaConfig, KafkaSecrets
from bridge.forwarder import Forwarder, ForwarderStats
from bridge.spool import DeadLetter, SpoolReader, SpoolStats
from bridge.uplink_protocol import (
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
    encode,
)
from common import gcsettle
from common.libc import name_os_thread
from gateway.errors import SpoolError

__all__ = ["SpoolClient", "main"]

_log = structlog.get_logger("edgegw.bridge.uplink")

STATS_EVERY_S = 0.5
"""The forwarder's figures are looked at this often and sent when they changed."""
STATS_IDLE_S = 1.0
"""Unchanged figures go to the parent this often all the same: its sign of life (the parent
kills an uplink process silent for ``bridge.uplink.SILENT_S``)."""
_PR_SET_PDEATHSIG = 1  # prctl(2)
GONE = 3
"""``UplinkChild.run``: the gateway went away without a stop."""
NICE = 5
"""How far below ``edgegw run`` the uplink process runs (CFS weight about a third of the gateway's
when both want the CPU; all of it when the gateway is idle)."""


class Channel:
    """Framed messages on a connected socket: :meth:`send` from any thread, :meth:`recv` from one."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._decoder = FrameDecoder()
        self._inbox: list[Message] = []
        self._send_lock = threading.Lock()
        self.stalled = False
        """A send timed out (``SO_SNDTIMEO`` on the socket: the peer stopped reading); the
        stream may hold part of a frame, so nothing more is sent."""

    def send(self, msg: Message) -> bool:
        """False when the peer is gone, or not reading (see :attr:`stalled`)."""
        data = encode(msg)
        with self._send_lock:
            if self.stalled:
                return False
            try:
                self.sock.sendall(data)
            except (BlockingIOError, TimeoutError):  # EAGAIN after SO_SNDTIMEO
                self.stalled = True
                return False
            except OSError:
                return False
        return True

    def recv(self) -> Message | None:
        """The next message; None at EOF (the peer closed or died)."""
        while not self._inbox:
            try:
                data = self.sock.recv(65536)
            except OSError:
                return None
            if not data:
                return None
            self._inbox.extend(self._decoder.feed(data))
        return self._inbox.pop(0)

    def shutdown(self) -> None:
        """Wake a :meth:`recv` in another thread (it returns None)."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)


class _Waiter:
    __slots__ = ("done", "error", "value")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value = 0
        self.error: str | None = "the gateway went away"


class SpoolClient:
    """The spool as the forwarder sees it (:class:`bridge.forwarder.SpoolAccess`), in the
    uplink process: reads from the file, writes through the parent."""

    def __init__(self, channel: Channel, start: Start) -> None:
        self._channel = channel
        self.path = Path(start.spool_path)
        self.spool_id = start.spool_id
        self._lanes = dict(start.lanes)
        self.durable_seq = start.durable_seq
        """Rows below this sequence are on disk: the reader ships none above (the parent's
        ``Spool.durable_seq``, from :class:`Start` and each :class:`Ready`)."""
        self.data_ready = threading.Event()
        self.busy = False
        self._status = Status(0, 0, None, 0, {}, [])
        self._ids = itertools.count(1)
        self._waiting: dict[int, _Waiter] = {}
        self._lock = threading.Lock()
        self._closed = False

    # ------------------------------------------------------------------ from the parent
    def update(self, status: Status) -> None:
        self._status = status

    def answer(self, reply: Reply) -> None:
        with self._lock:
            waiter = self._waiting.pop(reply.id, None)
        if waiter is not None:
            waiter.value, waiter.error = reply.value, reply.error
            waiter.done.set()

    def parent_gone(self) -> None:
        """Fail every request still waiting (the parent will never answer)."""
        with self._lock:
            self._closed = True
            waiting, self._waiting = self._waiting, {}
        for waiter in waiting.values():
            waiter.done.set()
        self.data_ready.set()

    def heartbeat_extra(self) -> Mapping[str, Any]:
        return self._status.extra

    def is_busy(self) -> bool:
        return self.busy

    # ------------------------------------------------------------------ SpoolAccess
    @property
    def lanes(self) -> dict[int, int]:
        return dict(self._lanes)

    def stored_lanes(self) -> list[int]:
        return list(self._status.stored_lanes)

    def reader(self) -> SpoolReader:
        return SpoolReader(self.path, horizon=lambda: self.durable_seq)

    def stats(self) -> SpoolStats:
        s = self._status
        return SpoolStats(depth=s.depth, bytes=s.bytes, by_priority={}, oldest_age=s.oldest_age,
                          dropped=dict(s.dropped), dead_letters=s.dead_letters, committed_rows=0, commits=0,
                          pending=0, commit_ms_p50=None, commit_ms_p99=None, durable_ms_p50=None,
                          durable_ms_p99=None, failed=None)  # fmt: skip

    def settle(self, delete_upto: Mapping[int, int] | None = None, dead: Sequence[DeadLetter] = (), *,
               wait: bool = False, timeout: float | None = 60.0) -> None:  # fmt: skip
        rows = [(d.seq, d.lane, d.reason, d.error) for d in dead]
        upto = dict(delete_upto or {})
        if not wait:
            if not self._channel.send(Settle(0, upto, rows)):
                raise SpoolError("the gateway went away")
            return
        self._request(lambda rid: Settle(rid, upto, rows), timeout)

    def rebase(self, floor: int, timeout: float | None = 60.0) -> int:
        return self._request(lambda rid: Rebase(rid, floor), timeout)

    def _request(self, build: Any, timeout: float | None) -> int:
        waiter = _Waiter()
        with self._lock:
            if self._closed:
                raise SpoolError("the gateway went away")
            rid = next(self._ids)
            self._waiting[rid] = waiter
        if not self._channel.send(build(rid)):
            self.parent_gone()
        if not waiter.done.wait(timeout):
            with self._lock:
                self._waiting.pop(rid, None)
            raise SpoolError(f"the gateway did not apply the spool write within {timeout} s")
        if waiter.error is not None:
            raise SpoolError(waiter.error)
        return waiter.value


def _die_with_parent() -> None:
    """SIGTERM when the parent dies (Linux), whatever killed it (SIGKILL included)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        return


def _yield_cpu() -> None:
    """Run ``NICE`` steps below the gateway: on a busy machine the kernel gives the rules and
    commands the CPU first, and the uplink the rest (it has a spool to catch up from)."""
    try:
        os.nice(NICE)
    except OSError:  # a seccomp filter without setpriority (systemd's @resources): same priority
        return


class UplinkChild:
    """The child's main loop: messages in on the main thread, stats out on a thread."""

    def __init__(self, channel: Channel, start: Start) -> None:
        self.channel = channel
        self.client = SpoolClient(channel, start)
        secrets = KafkaSecrets(sasl_password=start.sasl_password, ssl_key_password=start.ssl_key_password)
        self.forwarder = Forwarder.for_kafka(
            self.client,
            KafkaConfig.model_validate(start.kafka),
            gateway_id=start.gateway_id,
            secrets=secrets,
            busy=self.client.is_busy,
            heartbeat_extra=self.client.heartbeat_extra,
        )
        self._done = threading.Event()
        self._stopping = threading.Lock()
        self._stopper: threading.Thread | None = None
        self._closing = False
        """Set just before this side closes the socket (a stop): any other EOF is the parent gone."""

    def run(self) -> int:
        gcsettle.settle()  # the imports and the config out of the collector's reach (common/gcsettle.py)
        self.forwarder.start()
        reporter = threading.Thread(target=self._report, name="edgegw-uplink-stats", daemon=True)
        reporter.start()
        try:
            while True:
                msg = self.channel.recv()
                if msg is None:
                    break
                self._dispatch(msg)
        except ProtocolError as exc:
            _log.error("uplink process: bad message from the gateway; exiting", error=str(exc))
        self.client.parent_gone()
        if not self._closing:  # an end we did not ask for: the gateway is gone (killed?)
            # nothing shipped now could be settled: no waiting for Kafka (main() exits at once)
            _log.warning("uplink process: the gateway is gone; exiting")
            return GONE
        if self._stopper is not None:
            self._stopper.join()
        self._done.set()
        return 0

    def _dispatch(self, msg: Message) -> None:
        if isinstance(msg, Ready):
            if msg.durable_seq is not None:
                self.client.durable_seq = msg.durable_seq
            self.client.data_ready.set()
        elif isinstance(msg, Status):
            self.client.update(msg)
        elif isinstance(msg, Busy):
            self.client.busy = msg.busy
        elif isinstance(msg, Reply):
            self.client.answer(msg)
        elif isinstance(msg, Stop):
            self.stop(msg.budget)
        else:
            _log.warning("uplink process: unexpected message; ignored", type=msg.TYPE)

    def stop(self, budget: float) -> None:
        """Drain for ``budget`` s (0: finish the transaction in flight), report, close the socket."""
        with self._stopping:
            if self._stopper is not None:
                if budget == 0:  # SIGTERM during a drain: cut it short; _stop joins the thread
                    self.forwarder.interrupt()
                return
            self._stopper = threading.Thread(target=self._stop, args=(budget,), name="edgegw-uplink-stop",
                                             daemon=True)  # fmt: skip
            self._stopper.start()

    def _stop(self, budget: float) -> None:
        if budget > 0:
            self.forwarder.drain(budget)
        self.forwarder.stop(10.0)
        self.channel.send(self._stats())
        self._closing = True
        self.channel.shutdown()

    def _stats(self) -> Stats:
        return Stats(asdict(self.forwarder.stats()))

    def _report(self) -> None:
        name_os_thread()
        last: ForwarderStats | None = None
        sent = 0.0
        while not self._done.wait(STATS_EVERY_S):
            stats = self.forwarder.stats()
            now = time.monotonic()
            if stats != last or now - sent >= STATS_IDLE_S:
                if not self.channel.send(Stats(asdict(stats))):
                    return
                last, sent = stats, now


def _on_sigterm(child: UplinkChild) -> None:
    """SIGTERM: stop now, finishing the transaction in flight (see :func:`main`)."""
    signal.sigwait({signal.SIGTERM})
    child.stop(0.0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bridge.uplink_process",
                                     description="edgegw's Kafka uplink (started by edgegw run)")  # fmt: skip
    parser.add_argument("--fd", type=int, required=True, help="this end of the socket pair to edgegw run")
    args = parser.parse_args(argv)
    _die_with_parent()
    _yield_cpu()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # SIGTERM is taken by a thread of its own (sigwait), never by a Python handler: a handler
    # runs on the main thread between bytecodes, and one that came while that thread held a
    # lock the stop needs deadlocked the process (seen after a SIGKILLed gateway). Blocked
    # here, before any thread starts, so every thread (librdkafka's too) inherits the mask.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    name_os_thread("edgegw-uplink")
    channel = Channel(socket.socket(fileno=args.fd))
    if os.getppid() == 1:  # the parent died before PR_SET_PDEATHSIG took hold
        return 1
    try:
        first = channel.recv()
    except ProtocolError as exc:
        print(f"edgegw uplink: bad start message: {exc}", file=sys.stderr)
        return 2
    if not isinstance(first, Start):
        print("edgegw uplink: no start message from the gateway", file=sys.stderr)
        return 2
    from common.logs import configure_logging  # noqa: PLC0415 - the parent's settings, known now

    configure_logging(level=first.log_level, json=first.log_json)
    child = UplinkChild(channel, first)
    threading.Thread(target=_on_sigterm, args=(child,), name="edgegw-uplink-sig", daemon=True).start()
    _log.info("uplink process started", pid=os.getpid(), spool=first.spool_path)
    code = child.run()
    if code == GONE:  # not even librdkafka's teardown: a transaction left open is aborted by Kafka
        sys.stderr.flush()
        os._exit(0)
    _log.info("uplink process stopped", shipped=child.forwarder.stats().shipped)
    return code


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
