"""The Kafka uplink in a process of its own, supervised by ``edgegw run``.

Runtime API (what :class:`bridge.forwarder.Forwarder` offered in-thread)::

    uplink = UplinkProcess(spool, config.kafka, gateway_id=gid, secrets=resolved, busy=late)
    uplink.start()        # spawns `python -P -m bridge.uplink_process`; restarted with backoff
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
child reads the checkpoint and rebases, as a restarted gateway would. A child that froze
(deadlock, SIGSTOP) is killed and restarted the same way: silent for ``SILENT_S`` (it sends
its figures at least once a second), or not reading (a send to it timed out after
``SEND_TIMEOUT_S``: ``SO_SNDTIMEO``, so no thread here ever blocks on it for good).

The child runs this code (``python -P``, this import root first on PYTHONPATH: never a
``bridge`` package in the cwd), with this environment minus the variables the config's
``env:`` secrets name: it gets the resolved secrets on its socket only.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

import structlog
from pydantic import BaseModel

import bridge
from bridge.config import KafkaConfig, KafkaSecrets, SecretRef
from bridge.forwarder import ForwarderStats
from bridge.spool import DeadLetter, Spool
from bridge.uplink_process import Channel
from bridge.uplink_protocol import (
    Busy,
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
SEND_TIMEOUT_S = 5
"""A message to the child that cannot be sent for this long (``SO_SNDTIMEO``: it stopped
reading and the socket buffer is full): the child is killed and started again."""
SILENT_S = 30.0
"""A child that sent nothing for this long (it sends its figures at least once a second)
is frozen (deadlock, SIGSTOP): killed and started again."""


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


def secret_env_names(model: BaseModel) -> set[str]:
    """The environment variables the :class:`SecretRef` fields of ``model`` (nested models
    and lists included) name: the uplink process is started without them."""
    names: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, SecretRef):
            if value.env is not None:
                names.add(value.env)
        elif isinstance(value, BaseModel):
            for field in type(value).model_fields:
                walk(getattr(value, field))
        elif isinstance(value, (list, tuple, set, frozenset)):
            for item in value:
                walk(item)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)

    walk(model)
    return names


def _child_env(hidden: Collection[str]) -> dict[str, str]:
    """This environment without ``hidden`` (secrets named by ``env:``), and with this
    process's import root first on PYTHONPATH: the child (``python -P``, no cwd on its path)
    runs this code, installed or a checkout, whatever directory it starts in."""
    env = {k: v for k, v in os.environ.items() if k not in hidden}
    root = str(Path(bridge.__file__).resolve().parents[1])
    rest = env.get("PYTHONPATH")
    env["PYTHONPATH"] = root if not rest else root + os.pathsep + rest
    return env


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
                 backoff: Backoff | None = None, hidden_env: Collection[str] = ()) -> None:  # fmt: skip
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
        self._hidden_env = frozenset(hidden_env) | secret_env_names(config)
        """Not passed to the child: the config's ``env:`` secrets (it gets them on its socket)."""
        self._stop_sent: Channel | None = None
        """The channel Stop went to (once per child; stop() and _spawn may both want to)."""
        self._kill_reason: str | None = None
        """Why this side killed the current child (its ``last_exit``)."""
        self._listening_since: float | None = None
        """When _serve began waiting for the child's next message (None: not waiting)."""

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
        deadline = time.monotonic() + budget + STOP_GRACE_S
        self._stopping.set()
        self.spool.data_ready.set()  # wakes the feeder
        with self._lock:
            proc, channel = self._proc, self._channel
        if proc is not None and channel is not None and proc.poll() is None:
            # sent from a thread: a child that stopped reading must not hold this past the deadline
            threading.Thread(target=self._send_stop, args=(channel, budget), name="edgegw-uplink-stop",
                             daemon=True).start()  # fmt: skip
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
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
            try:
                if not self._supervise_once():
                    break
            except Exception:  # noqa: BLE001 - this thread must outlive any bug: it restarts the child
                _log.exception("uplink supervisor failed unexpectedly; starting the uplink process again")
                if self._reap():
                    self._restarts += 1
                    self._last_exit = "killed: supervisor error"
                self._state = "restarting"
                self._stopping.wait(self._backoff.next())
        self._state = "stopped"

    def _reap(self) -> bool:
        """After an unexpected error: no child left behind, none recorded. True if there was one."""
        with self._lock:
            proc, channel = self._proc, self._channel
            self._proc, self._channel, self._kill_reason = None, None, None
        self._listening_since = None
        if proc is not None:
            proc.kill()
            proc.wait()
        if channel is not None:
            channel.sock.close()
        return proc is not None

    def _supervise_once(self) -> bool:
        """Start the child, serve it until it ends; False when the uplink is stopping."""
        began = time.monotonic()
        try:
            proc, channel = self._spawn()
        except OSError as exc:
            _log.error("cannot start the uplink process; retrying", error=str(exc))
            self._stopping.wait(self._backoff.next())
            return True
        self._serve(channel)
        code = proc.wait()
        with self._lock:
            self._proc, self._channel = None, None
            reason, self._kill_reason = self._kill_reason, None
        channel.sock.close()
        self._last_exit = reason or _describe_exit(code)
        if self._stopping.is_set():
            _log.info("uplink process stopped", how=self._last_exit)
            return False
        self._restarts += 1
        self._state = "restarting"
        if time.monotonic() - began >= STABLE_S:
            self._backoff.reset()
        delay = self._backoff.next()
        _log.error("uplink process ended; restarting", how=self._last_exit, restarts=self._restarts,
                   seconds=round(delay, 2))  # fmt: skip
        self._stopping.wait(delay)
        return True

    def _spawn(self) -> tuple[subprocess.Popen[bytes], Channel]:
        ours, theirs = socket.socketpair()
        # sends time out (a child that stops reading must not block a thread here for good);
        # receives stay blocking (a timeout there would look like EOF): silence is _feed's
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", SEND_TIMEOUT_S, 0))
        level, json, stream = _live_logging(self._log_level, self._log_json)
        try:
            proc = subprocess.Popen(  # our own interpreter and module (-P: not the cwd's), no shell
                [sys.executable, "-P", "-m", "bridge.uplink_process", "--fd", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stderr=stream,
                close_fds=True,
                env=_child_env(self._hidden_env),
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
            durable_seq=self.spool.durable_seq,
        )
        channel.send(start)
        channel.send(self._status())
        channel.send(Busy(self._was_busy))
        with self._lock:
            self._proc, self._channel = proc, channel
        if self._stopping.is_set():  # stop() came while it was spawning (it may have seen it, or not)
            self._send_stop(channel, 0.0)
        self._state = "up"
        _log.info("uplink process started", pid=proc.pid, restarts=self._restarts)
        return proc, channel

    def _serve(self, channel: Channel) -> None:
        """Apply the child's requests until it closes the socket (exit, crash or kill)."""
        while True:
            self._listening_since = time.monotonic()
            try:
                msg = channel.recv()
            except ProtocolError as exc:
                _log.error("uplink process sent a bad message; restarting it", error=str(exc))
                with self._lock:
                    proc = self._proc
                if proc is not None:
                    proc.kill()
                return
            finally:
                self._listening_since = None
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
                self._rebase(channel, msg)
            else:
                _log.warning("uplink process: unexpected message; ignored", type=msg.TYPE)

    def _rebase(self, channel: Channel, msg: Rebase) -> None:
        if self.spool.failed is not None:
            self._send(channel, Reply(msg.id, error=str(self.spool.failed)))
            return
        try:
            moved = self.spool.rebase(msg.floor, timeout=SETTLE_TIMEOUT_S)
        except GatewayError as exc:
            self._send(channel, Reply(msg.id, error=str(exc)))
        else:
            self._send(channel, Reply(msg.id, value=moved))

    def _settle(self, channel: Channel, msg: Settle) -> None:
        dead = [DeadLetter(seq, lane, reason, error) for seq, lane, reason, error in msg.dead]
        wait = msg.id > 0
        if self.spool.failed is not None:  # nobody would apply it: the rows stay, sent again later
            if wait:
                self._send(channel, Reply(msg.id, error=str(self.spool.failed)))
            return
        try:
            self.spool.settle(msg.upto, dead, wait=wait, timeout=SETTLE_TIMEOUT_S)
        except GatewayError as exc:
            if wait:
                self._send(channel, Reply(msg.id, error=str(exc)))
            return
        if wait:
            self._send(channel, Reply(msg.id))

    def _send(self, channel: Channel, msg: Message) -> bool:
        """Send to the child; one that is not reading (the send timed out) is killed."""
        if channel.send(msg):
            return True
        if channel.stalled:
            self._kill(channel, f"killed: not reading for {SEND_TIMEOUT_S} s")
        return False

    def _send_stop(self, channel: Channel, budget: float) -> None:
        """Stop, once per child."""
        with self._lock:
            if self._stop_sent is channel:
                return
            self._stop_sent = channel
        self._send(channel, Ready(self.spool.durable_seq))  # the last sync (the stop's flush) too
        self._send(channel, Stop(budget))

    def _kill(self, channel: Channel, reason: str) -> None:
        """Kill the child of ``channel`` if it is still the current one; the supervisor sees
        it end, records ``reason`` as its ``last_exit`` and starts another."""
        with self._lock:
            proc = self._proc
            if proc is None or self._channel is not channel or self._kill_reason is not None:
                return
            self._kill_reason = reason
        _log.error("uplink process unresponsive; killing it", pid=proc.pid, reason=reason)
        proc.kill()

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
        told: tuple[Channel, int] | None = None  # the durable_seq a channel was told last
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
            since = self._listening_since
            if since is not None and time.monotonic() - since > SILENT_S:  # frozen (SIGSTOP, deadlock)
                self._kill(channel, f"killed: silent for {SILENT_S:g} s")
            if woke:
                ready.clear()
            durable = self.spool.durable_seq  # read after the clear: a later sync sets it again
            if woke or told != (channel, durable):  # a sync it did not hear of (it was spawning) too
                told = (channel, durable)
                self._send(channel, Ready(durable))
            busy = self._busy is not None and self._busy()
            if busy != self._was_busy:
                self._was_busy = busy
                self._send(channel, Busy(busy))
            now = time.monotonic()
            if now >= next_status:
                next_status = now + STATUS_EVERY_S
                try:
                    self._send(channel, self._status())
                except (ValueError, TypeError) as exc:  # a heartbeat field JSON cannot carry
                    _log.warning("uplink status not sent", error=str(exc))
