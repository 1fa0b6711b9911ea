"""The Kafka uplink in a process of its own, supervised by ``edgegw run``.

Runtime API (what :class:`bridge.forwarder.Forwarder` offered in-thread)::

    uplink = UplinkProcess(spool, config.kafka, gateway_id=gid, secrets=resolved, busy=late)
    uplink.start()        # spawns `python -m bridge.uplink_process`; restarted with backoff
    uplink.stats()        # ForwarderStats as the child last reported (backlog: this spool's)
    uplink.process()      # UplinkProcessStats: pid, up, restarts, last exit, resident memory
    uplink.stop(budget)   # the child ships what is committed within budget, then exits

Why a process: the forwarder's Python work (envelopes, librdkafka calls) held the GIL the
event loop needs for rules and commands; at QoS 1 with exactly-once Kafka the gateway fell
to half a bare subscriber's rate. And ``confluent_kafka`` (~9 MiB) is loaded by the child
only. The child reads the spool file itself; its writes (settle, rebase) come back over
the socket pair and this process's spool writer thread applies them, so one process writes
the SQLite file (no cross-process lock contention with the group commits).

Threads here: one supervises the child (spawn, serve its requests until EOF, restart with
:class:`common.backoff.Backoff`), one feeds it (``Ready`` on each commit that added rows,
``Busy`` when the loop runs late, ``Status`` once a second). A child that dies (crash,
SIGKILL, OOM) loses nothing: rows are deleted only once Kafka has them, and the restarted
child reads the checkpoint and rebases, as a restarted gateway would.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import IO, Any

import structlog

from bridge.config import KafkaConfig, KafkaSecrets
from bridge.forwarder import ForwarderStats
from bridge.spool import DeadLetter, Spool
from bridge.uplink_process import Channel
from bridge.uplink_protocol import (
    Busy,
    ProtocolError,
    Ready,
    Rebase,
    Reply,
    Settle,
    Start,
    Stats,
    Status,
    Stop,
)
from common.backoff import Backoff
from common.libc import name_os_thread
from gateway.errors import GatewayError

__all__ = ["UplinkProcess", "UplinkProcessStats"]

_log = structlog.get_logger("edgegw.bridge.uplink")

STATUS_EVERY_S = 1.0
"""Spool figures and heartbeat fields go to the child this often."""
FEED_TICK_S = 0.1
"""The feeder looks at the busy flag this often (a commit wakes it at once)."""
STABLE_S = 30.0
"""A child that ran this long resets the restart backoff."""
SETTLE_TIMEOUT_S = 30.0
STOP_GRACE_S = 2.0
"""After the drain budget: how long the uplink process may take to end the transaction in
flight and exit before it is killed (the gateway's own stop budget is small)."""


@dataclass(frozen=True, slots=True)
class UplinkProcessStats:
    state: str
    """up, restarting, stopped (or starting before the first spawn)."""
    pid: int | None
    restarts: int
    last_exit: str | None
    """How the last child ended: ``exit 1``, ``signal SIGKILL``..."""
    rss_bytes: int | None

    @property
    def up(self) -> bool:
        return self.state == "up"


def _rss_bytes(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _live_logging(level: str, json: bool | None) -> tuple[str, bool | None, IO[str] | None]:
    """The log level, format and stream this process logs with now (``edgegw run --log-level``
    overrides the config; the demo logs to a file under its view), so that the uplink
    process's lines look the same and go to the same place. ``level``/``json`` otherwise."""
    config = structlog.get_config()
    name = getattr(config.get("wrapper_class"), "__name__", "")
    prefix = "BoundLoggerFilteringAt"
    if name.startswith(prefix) and name[len(prefix) :].lower() in ("debug", "info", "warning", "error"):
        level = name[len(prefix) :].lower()
    processors = config.get("processors") or []
    if processors:
        json = isinstance(processors[-1], structlog.processors.JSONRenderer)
    stream = getattr(config.get("logger_factory"), "_file", None)
    if stream is None or stream is sys.stderr or not hasattr(stream, "fileno"):
        return level, json, None
    return level, json, stream


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "unknown"
    if code < 0:
        import signal  # noqa: PLC0415

        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit {code}"


class UplinkProcess:
    """See the module docstring."""

    def __init__(self, spool: Spool, config: KafkaConfig, *, gateway_id: str,
                 secrets: KafkaSecrets | None = None, busy: Callable[[], bool] | None = None,
                 heartbeat_extra: Callable[[], Mapping[str, Any]] | None = None,
                 log_level: str = "info", log_json: bool | None = None,
                 backoff: Backoff | None = None) -> None:  # fmt: skip
        self.spool = spool
        self.config = config
        self.gateway_id = gateway_id
        self._secrets = secrets or KafkaSecrets()
        self._busy = busy
        self._heartbeat_extra = heartbeat_extra
        self._log_level, self._log_json = log_level, log_json
        self._backoff = backoff or Backoff(0.5, 30.0)
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._channel: Channel | None = None
        self._state = "starting"
        self._restarts = 0
        self._last_exit: str | None = None
        self._child_stats: ForwarderStats | None = None
        self._supervisor: threading.Thread | None = None
        self._feeder: threading.Thread | None = None
        self._was_busy = False

    # ------------------------------------------------------------------ life cycle
    def start(self) -> None:
        if self._supervisor is not None:
            return
        self._supervisor = threading.Thread(target=self._supervise, name="edgegw-uplink-sup", daemon=True)
        self._feeder = threading.Thread(target=self._feed, name="edgegw-uplink-feed", daemon=True)
        self._supervisor.start()
        self._feeder.start()

    def stop(self, budget: float = 5.0) -> None:
        """Ask the child to ship what is committed within ``budget`` s and exit; kill it if it
        does not. Requests it makes meanwhile are applied. Idempotent."""
        if self._stopping.is_set() and self._supervisor is None:
            return
        self._stopping.set()
        self.spool.data_ready.set()  # wakes the feeder
        with self._lock:
            proc, channel = self._proc, self._channel
        if proc is not None and channel is not None and proc.poll() is None:
            channel.send(Stop(budget))
            try:
                proc.wait(budget + STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                # a transaction still waiting for Kafka: killing it is safe (the transaction is
                # aborted, its rows stay in the spool and are shipped by the next run)
                _log.warning("uplink process did not stop in time; killed", pid=proc.pid)
                proc.kill()
        for thread in (self._supervisor, self._feeder):
            if thread is not None:
                thread.join(budget + 15.0)
        self._supervisor = self._feeder = None
        self._state = "stopped"
        if self.spool.writer_alive and self.spool.failed is None:
            with contextlib.suppress(GatewayError):
                self.spool.flush(SETTLE_TIMEOUT_S)  # the deletes the child asked for are committed

    @property
    def running(self) -> bool:
        """Started and not stopped (the child may be restarting)."""
        return self._supervisor is not None and not self._stopping.is_set()

    # ------------------------------------------------------------------ figures
    def stats(self) -> ForwarderStats:
        """The forwarder's figures as the child last reported them, the backlog as of now
        (this process's spool). While the child is away: its state is ``restarting``."""
        s = self.spool.stats()
        fw = self._child_stats
        state = self._state
        if fw is None:
            fw = ForwarderStats(state="starting", mode=self.config.mode, shipped=0, heartbeats=0,
                                dead_lettered=0, transactions=0, reconnects=0, last_error=None,
                                last_shipped_at=None, backlog_rows=0, backlog_bytes=0,
                                backlog_oldest_age=None, cursors={})  # fmt: skip
        if state != "up":
            away = "stopped" if state == "stopped" else "restarting" if self._restarts else "starting"
            fw = replace(fw, state=away)
        return replace(fw, backlog_rows=s.depth, backlog_bytes=s.bytes, backlog_oldest_age=s.oldest_age)

    def process(self) -> UplinkProcessStats:
        proc = self._proc
        pid = proc.pid if proc is not None and self._state == "up" else None
        rss = None if pid is None else _rss_bytes(pid)
        return UplinkProcessStats(state=self._state, pid=pid, restarts=self._restarts,
                                  last_exit=self._last_exit, rss_bytes=rss)  # fmt: skip

    @property
    def pid(self) -> int | None:
        return self.process().pid

    # ------------------------------------------------------------------ supervisor thread
    def _supervise(self) -> None:
        name_os_thread()
        while not self._stopping.is_set():
            began = time.monotonic()
            try:
                proc, channel = self._spawn()
            except OSError as exc:
                _log.error("cannot start the uplink process; retrying", error=str(exc))
                self._stopping.wait(self._backoff.next())
                continue
            self._serve(channel)
            code = proc.wait()
            with self._lock:
                self._proc, self._channel = None, None
            channel.sock.close()
            self._last_exit = _describe_exit(code)
            if self._stopping.is_set():
                _log.info("uplink process stopped", how=self._last_exit)
                break
            self._restarts += 1
            self._state = "restarting"
            if time.monotonic() - began >= STABLE_S:
                self._backoff.reset()
            delay = self._backoff.next()
            _log.error("uplink process ended; restarting", how=self._last_exit, restarts=self._restarts,
                       seconds=round(delay, 2))  # fmt: skip
            self._stopping.wait(delay)
        self._state = "stopped"

    def _spawn(self) -> tuple[subprocess.Popen[bytes], Channel]:
        ours, theirs = socket.socketpair()
        level, json, stream = _live_logging(self._log_level, self._log_json)
        try:
            proc = subprocess.Popen(  # our own interpreter and module, no shell
                [sys.executable, "-m", "bridge.uplink_process", "--fd", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stderr=stream,
                close_fds=True,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        channel = Channel(ours)
        secrets = self._secrets
        sasl, key = secrets.sasl_password, secrets.ssl_key_password
        start = Start(
            kafka=self.config.model_dump(mode="json"),
            gateway_id=self.gateway_id,
            spool_path=str(self.spool.path),
            spool_id=self.spool.spool_id,
            lanes=self.spool.lanes,
            sasl_password=None if sasl is None else sasl.get_secret_value(),
            ssl_key_password=None if key is None else key.get_secret_value(),
            log_level=level,
            log_json=json,
        )
        channel.send(start)
        channel.send(self._status())
        channel.send(Busy(self._was_busy))
        with self._lock:
            self._proc, self._channel = proc, channel
        if self._stopping.is_set():  # stop() came while it was spawning and saw no child
            channel.send(Stop(0.0))
        self._state = "up"
        _log.info("uplink process started", pid=proc.pid, restarts=self._restarts)
        return proc, channel

    def _serve(self, channel: Channel) -> None:
        """Apply the child's requests until it closes the socket (exit, crash or kill)."""
        while True:
            try:
                msg = channel.recv()
            except ProtocolError as exc:
                _log.error("uplink process sent a bad message; restarting it", error=str(exc))
                with self._lock:
                    proc = self._proc
                if proc is not None:
                    proc.kill()
                return
            if msg is None:
                return
            if isinstance(msg, Stats):
                try:
                    self._child_stats = ForwarderStats(**msg.forwarder)
                except TypeError as exc:
                    _log.warning("uplink process: stats not understood", error=str(exc))
            elif isinstance(msg, Settle):
                self._settle(channel, msg)
            elif isinstance(msg, Rebase):
                if self.spool.failed is not None:
                    channel.send(Reply(msg.id, error=str(self.spool.failed)))
                    continue
                try:
                    moved = self.spool.rebase(msg.floor, timeout=SETTLE_TIMEOUT_S)
                except GatewayError as exc:
                    channel.send(Reply(msg.id, error=str(exc)))
                else:
                    channel.send(Reply(msg.id, value=moved))
            else:
                _log.warning("uplink process: unexpected message; ignored", type=msg.TYPE)

    def _settle(self, channel: Channel, msg: Settle) -> None:
        dead = [DeadLetter(seq, lane, reason, error) for seq, lane, reason, error in msg.dead]
        wait = msg.id > 0
        if self.spool.failed is not None:  # nobody would apply it: the rows stay, sent again later
            if wait:
                channel.send(Reply(msg.id, error=str(self.spool.failed)))
            return
        try:
            self.spool.settle(msg.upto, dead, wait=wait, timeout=SETTLE_TIMEOUT_S)
        except GatewayError as exc:
            if wait:
                channel.send(Reply(msg.id, error=str(exc)))
            return
        if wait:
            channel.send(Reply(msg.id))

    # ------------------------------------------------------------------ feeder thread
    def _status(self) -> Status:
        s = self.spool.stats()
        extra: Mapping[str, Any] = {}
        if self._heartbeat_extra is not None:
            try:
                extra = self._heartbeat_extra()
            except Exception as exc:  # noqa: BLE001 - a heartbeat field must never stop the uplink
                _log.warning("heartbeat fields failed", error=str(exc))
        return Status(depth=s.depth, bytes=s.bytes, oldest_age=s.oldest_age, dead_letters=s.dead_letters,
                      dropped=dict(s.dropped), stored_lanes=self.spool.stored_lanes(),
                      extra=dict(extra))  # fmt: skip

    def _feed(self) -> None:
        name_os_thread()
        ready = self.spool.data_ready
        next_status = last_commit = 0.0
        while not self._stopping.is_set():
            now = time.monotonic()
            # every FEED_TICK_S while rows come in or the loop runs late (the busy flag
            # matters then); idle, only the status is due: one wakeup a second, not ten
            active = now - last_commit < STATUS_EVERY_S or self._was_busy
            woke = ready.wait(FEED_TICK_S if active else max(0.0, next_status - now))
            if self._stopping.is_set():
                break
            if woke:
                last_commit = time.monotonic()
            with self._lock:
                channel = self._channel
            if channel is None:  # the child is away: it reads everything when it is back
                ready.clear()
                self._stopping.wait(FEED_TICK_S)
                continue
            if woke:
                ready.clear()
                channel.send(Ready())
            busy = self._busy is not None and self._busy()
            if busy != self._was_busy:
                self._was_busy = busy
                channel.send(Busy(busy))
            now = time.monotonic()
            if now >= next_status:
                next_status = now + STATUS_EVERY_S
                try:
                    channel.send(self._status())
                except (ValueError, TypeError) as exc:  # a heartbeat field JSON cannot carry
                    _log.warning("uplink status not sent", error=str(exc))
