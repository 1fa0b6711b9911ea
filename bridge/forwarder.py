"""The forwarder: drains the spool to Kafka in its own thread, lane by lane, in order.

Runtime API::

    forwarder = Forwarder.for_kafka(spool, config.kafka, gateway_id=gid, secrets=resolved)
    forwarder.start()          # a thread of its own: ingest and rules never wait for it
    forwarder.stats()          # ForwarderStats: state, backlog size and age, counters (for /metrics)
    forwarder.stop()

Each round reads up to ``batch_rows`` rows, lane 0 (rule events) first, then commands,
then readings, each lane in spool order, so a device's records reach its topic in the
order they were spooled, backlog before live data. In exactly-once mode the round is one
transaction with the checkpoint (:mod:`bridge.checkpoint`); rows are deleted locally only
after the commit, and a restart drops what the checkpoint covers. In at-least-once mode
the rows Kafka acknowledged are deleted. A row Kafka refuses for good goes to the
dead-letter table and the round is retried without it. While Kafka is away the
forwarder backs off with jitter; when it answers again, it drains at full speed.
A heartbeat event (spool depth, versions) goes out every ``heartbeat_interval``.
"""

from __future__ import annotations

import importlib.metadata
import platform
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from bridge.envelope import Envelope, OutMessage, RawRow
from bridge.policy import Kind
from bridge.spool import DeadLetter, SpoolStats
from common.backoff import Backoff
from common.libc import name_os_thread
from gateway.errors import SpoolError, UplinkError, UplinkRefusedError

if TYPE_CHECKING:
    from bridge.checkpoint import Checkpoint  # confluent_kafka: loaded where the forwarder runs only
    from bridge.config import KafkaConfig, KafkaSecrets

__all__ = ["Forwarder", "ForwarderStats", "RowReader", "SendResult", "SpoolAccess", "Uplink", "versions"]

_log = structlog.get_logger("edgegw.bridge.forwarder")

IDLE_WAIT = 1.0
"""Seconds an idle forwarder sleeps at most between looks at the spool (new rows wake it at once)."""


@dataclass(frozen=True, slots=True)
class SendResult:
    """What happened to one batch. Empty: every record is in Kafka (and the checkpoint, if any)."""

    permanent: dict[int, tuple[str, str]] = field(default_factory=dict)
    """Index -> (reason, error) of records Kafka refuses for good (nothing was committed)."""
    transient: set[int] = field(default_factory=set)
    """At-least-once only: records not delivered this time."""


class Uplink(Protocol):
    """One connection to Kafka (a producer incarnation); see :class:`bridge.kafka.KafkaUplink`."""

    def connect(self) -> Checkpoint | None: ...
    def send(self, messages: Sequence[OutMessage], checkpoint: Checkpoint | None) -> SendResult: ...
    def close(self) -> None: ...


class RowReader(Protocol):
    """A read connection to the spool file (``SpoolReader``)."""

    def fetch_raw(self, lane: int, after: int, limit: int) -> Sequence[RawRow]: ...
    def close(self) -> None: ...


class SpoolAccess(Protocol):
    """What the forwarder needs from the spool: :class:`bridge.spool.Spool` in-process, or
    the uplink process's client (:mod:`bridge.uplink_process`), which reads the file itself
    and sends the writes (settle, rebase) to ``edgegw run``."""

    spool_id: str
    data_ready: threading.Event

    @property
    def lanes(self) -> dict[int, int]: ...
    def stored_lanes(self) -> list[int]: ...
    def reader(self) -> RowReader: ...
    def stats(self) -> SpoolStats: ...
    def settle(self, delete_upto: Mapping[int, int] | None = None, dead: Sequence[DeadLetter] = (), *,
               wait: bool = False, timeout: float | None = 60.0) -> None: ...  # fmt: skip
    def rebase(self, floor: int, timeout: float | None = 60.0) -> int: ...


@dataclass(frozen=True, slots=True)
class ForwarderStats:
    state: str
    """starting, connecting, up, backoff, refused or stopped."""
    mode: str
    shipped: int
    heartbeats: int
    dead_lettered: int
    transactions: int
    reconnects: int
    last_error: str | None
    last_shipped_at: float | None
    backlog_rows: int
    backlog_bytes: int
    backlog_oldest_age: float | None
    cursors: dict[int, int]
    yields: int = 0
    """Backlog rounds followed by a pause because the local path ran late."""
    state_since: float | None = None
    """Wall-clock time the state last changed."""


def versions() -> dict[str, str]:
    def dist(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "unknown"

    try:
        import confluent_kafka  # noqa: PLC0415 - only for its version

        librdkafka = confluent_kafka.libversion()[0]
    except ImportError:  # pragma: no cover - a dependency
        librdkafka = "unknown"
    return {
        "edgegw": dist("edgegw"),
        "confluent_kafka": dist("confluent-kafka"),
        "librdkafka": librdkafka,
        "sqlite": sqlite3.sqlite_version,
        "python": platform.python_version(),
    }


class Forwarder:
    def __init__(
        self,
        spool: SpoolAccess,
        uplink_factory: Callable[[], Uplink],
        *,
        gateway_id: str,
        topic_of_kind: Mapping[Kind, str],
        heartbeat_topic: str | None,
        exactly_once: bool = True,
        batch_rows: int = 5000,
        linger: float = 0.0,
        heartbeat_interval: float = 60.0,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.time,
        busy: Callable[[], bool] | None = None,
        heartbeat_extra: Callable[[], Mapping[str, Any]] | None = None,
    ) -> None:
        self.spool = spool
        self._heartbeat_extra = heartbeat_extra
        """Extra heartbeat fields from the runtime (the deployment running, the groups)."""
        self.gateway_id = gateway_id
        self.exactly_once = exactly_once
        self.batch_rows = batch_rows
        self.linger = linger
        self._full = False  # the last round carried batch_rows rows: more are waiting
        self._busy = busy
        """True while the local path (event loop) runs late: backlog rounds then pause."""
        self._yields = 0
        self.heartbeat_topic = heartbeat_topic
        self.heartbeat_interval = heartbeat_interval
        self._factory = uplink_factory
        self._envelope = Envelope(gateway_id, spool.spool_id, topic_of_kind)
        self._backoff = backoff or Backoff(0.5, 30.0)
        self._clock = clock
        self._uplink: Uplink | None = None
        self._cursors: dict[int, int] = {}
        self._lanes = sorted(set(spool.lanes.values()))
        self._stop = threading.Event()
        self._drain_until: float | None = None
        """Set by :meth:`drain`: the thread ends once the spool is shipped or at this time."""
        self._wake = threading.Event()
        """Set by :meth:`stop` and :meth:`drain`: ends a pause (linger, backoff) begun before."""
        self._thread: threading.Thread | None = None
        self._state = "starting"
        self._shipped = self._heartbeats = self._dead = self._transactions = self._reconnects = 0
        self._last_error: str | None = None
        self._last_shipped_at: float | None = None
        self._started = time.monotonic()
        self._next_heartbeat = 0.0
        self._beat = 0
        self._versions = versions()

    @classmethod
    def for_kafka(cls, spool: SpoolAccess, config: KafkaConfig, *, gateway_id: str,
                  secrets: KafkaSecrets | None = None, busy: Callable[[], bool] | None = None,
                  heartbeat_extra: Callable[[], Mapping[str, Any]] | None = None) -> Forwarder:  # fmt: skip
        from bridge.kafka import KafkaUplink  # noqa: PLC0415 - keeps librdkafka out of unit tests' imports

        return cls(
            spool,
            lambda: KafkaUplink(config, gateway_id, secrets),
            gateway_id=gateway_id,
            topic_of_kind=config.topics.of_kind(),
            heartbeat_topic=config.topics.heartbeats,
            exactly_once=config.mode == "exactly_once",
            batch_rows=config.batch_rows,
            linger=config.linger,
            heartbeat_interval=config.heartbeat_interval,
            backoff=Backoff(config.backoff_initial, config.backoff_max),
            busy=busy,
            heartbeat_extra=heartbeat_extra,
        )

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="edgegw-forwarder", daemon=True)
        self._thread.start()

    def drain(self, budget: float) -> bool:
        """Ship what the spool holds for at most ``budget`` seconds, then stop. True when the
        thread ended in time (everything shipped, or Kafka away and the budget spent)."""
        self._drain_until = time.monotonic() + max(0.0, budget)
        self._wake.set()
        self.spool.data_ready.set()
        thread = self._thread
        if thread is not None:
            thread.join(budget + 1.0)
            return not thread.is_alive()
        return True

    def interrupt(self) -> None:
        """End a :meth:`drain` (or the run) after the round in flight, without joining the
        thread: whoever called :meth:`drain`/:meth:`stop` joins it and disconnects."""
        self._stop.set()
        self._wake.set()
        self.spool.data_ready.set()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        self.spool.data_ready.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._disconnect(None)
        self._state = "stopped"

    @property
    def _state(self) -> str:
        return self._current_state

    @_state.setter
    def _state(self, value: str) -> None:
        if value != getattr(self, "_current_state", None):
            self._current_state = value
            self._state_since = time.time()

    def stats(self) -> ForwarderStats:
        s = self.spool.stats()
        return ForwarderStats(
            state=self._state,
            mode="exactly_once" if self.exactly_once else "at_least_once",
            shipped=self._shipped,
            heartbeats=self._heartbeats,
            dead_lettered=self._dead,
            transactions=self._transactions,
            reconnects=self._reconnects,
            last_error=self._last_error,
            last_shipped_at=self._last_shipped_at,
            backlog_rows=s.depth,
            backlog_bytes=s.bytes,
            backlog_oldest_age=s.oldest_age,
            cursors=dict(self._cursors),
            yields=self._yields,
            state_since=self._state_since,
        )

    def _run(self) -> None:
        name_os_thread("edgegw-uplink")
        reader = self.spool.reader()
        try:
            while not self._stop.is_set():
                began = time.monotonic()
                if self._drain_until is not None and began >= self._drain_until:
                    break
                try:
                    worked = self.step(reader.fetch_raw)
                except UplinkError as exc:
                    self._disconnect(exc)
                    delay = self._backoff.next()
                    if isinstance(exc, UplinkRefusedError):
                        delay = max(delay, self._backoff.maximum)
                    _log.debug("uplink backoff", seconds=round(delay, 2))
                    self._pause(delay)
                    continue
                except SpoolError as exc:
                    self._last_error = str(exc)
                    _log.error("forwarder cannot read the spool", error=str(exc))
                    self._pause(1.0)
                    continue
                except Exception as exc:  # noqa: BLE001 - this loop is the forwarder's supervisor
                    _log.exception("forwarder round failed unexpectedly; reconnecting")
                    self._disconnect(UplinkError(f"unexpected: {exc!r}"))
                    self._pause(self._backoff.next())
                    continue
                if not worked and self._drain_until is not None:
                    break  # draining, and the spool is shipped
                if not worked:
                    self.spool.data_ready.wait(self._idle_wait())
                elif self.linger and not self._full and self._drain_until is None:
                    self._pause(self.linger)  # let a trickle gather into one transaction
                elif self._busy is not None and self._busy():
                    # a backlog drains while the local path is short of time: give it as long
                    # as the round took (the drain slows to half speed, automation stays prompt)
                    self._yields += 1
                    self._pause(min(1.0, time.monotonic() - began))
        finally:
            reader.close()

    def _pause(self, delay: float) -> None:
        """Wait ``delay`` s, or until stopped or asked to drain (a drain's budget caps it)."""
        if self._drain_until is not None:
            self._stop.wait(min(delay, max(0.0, self._drain_until - time.monotonic())))
        else:
            self._wake.wait(delay)

    def _idle_wait(self) -> float:
        """How long an idle round sleeps unless new rows wake it (``data_ready``): until the
        next heartbeat is due, at most ``IDLE_WAIT``. Without a heartbeat topic no heartbeat
        is ever due (``_next_heartbeat`` stays 0): the full ``IDLE_WAIT``, not 0 s."""
        if self.heartbeat_topic is None:
            return IDLE_WAIT
        return max(0.0, min(IDLE_WAIT, self._next_heartbeat - time.monotonic()))

    def _disconnect(self, exc: UplinkError | None) -> None:
        uplink, self._uplink = self._uplink, None
        if uplink is not None:
            uplink.close()
        if exc is None:
            return
        message = str(exc)
        state = "refused" if isinstance(exc, UplinkRefusedError) else "backoff"
        if state != self._state or message != self._last_error:
            log = _log.error if state == "refused" else _log.warning
            log("uplink unavailable" if state == "backoff" else "uplink refused", error=message)
        self._state = state
        self._last_error = message

    def _connect(self) -> Uplink:
        self._state = "connecting" if self._state in ("starting", "connecting") else self._state
        uplink = self._factory()
        try:
            checkpoint = uplink.connect()
        except BaseException:
            uplink.close()
            raise
        if checkpoint is not None and checkpoint.spool_id != self.spool.spool_id:
            _log.warning("checkpoint belongs to another spool file; ignored", spool_id=checkpoint.spool_id)
            checkpoint = None
        if checkpoint is not None:
            self.spool.rebase(max(checkpoint.lanes.values(), default=0))
            for lane, seq in checkpoint.lanes.items():
                self._cursors[lane] = max(seq, self._cursors.get(lane, 0))
            self.spool.settle(delete_upto=self._cursors)  # rows already in Kafka
        if self._reconnects or self._state != "connecting":
            _log.info("uplink connected", cursors=self._cursors)
        self._reconnects += 1
        self._backoff.reset()
        self._state = "up"
        self._uplink = uplink
        return uplink

    # ------------------------------------------------------------------ one round
    def step(self, fetch: Callable[[int, int, int], Sequence[RawRow]]) -> bool:
        """Ship one batch (connecting first if needed). False when there was nothing to do."""
        uplink = self._uplink or self._connect()
        self.spool.data_ready.clear()
        messages, unknown = self._batch(fetch)
        beat = self.heartbeat_topic is not None and time.monotonic() >= self._next_heartbeat
        if beat and self.heartbeat_topic is not None:
            messages.append(self._heartbeat(self.heartbeat_topic))
        if not messages:
            return bool(unknown)
        upto: dict[int, int] = {}
        for m in messages:
            if m.seq is not None:
                upto[m.lane] = m.seq
        checkpoint = None
        if self.exactly_once and upto:
            from bridge.checkpoint import Checkpoint  # noqa: PLC0415 - see the TYPE_CHECKING import

            checkpoint = Checkpoint(self.gateway_id, self.spool.spool_id, {**self._cursors, **upto})
        result = uplink.send(messages, checkpoint)
        self._transactions += 1
        if beat and len(messages) - 1 in result.permanent:  # never let a refused heartbeat block data
            _log.warning("heartbeat refused by Kafka", error=result.permanent[len(messages) - 1][1])
            self._next_heartbeat = time.monotonic() + self.heartbeat_interval
        if self.exactly_once:
            self._settle_transaction(messages, upto, result)
        else:
            self._settle_acks(messages, result)
        if beat and not result.transient and (self.exactly_once is False or not result.permanent):
            self._heartbeats += 1
            self._next_heartbeat = time.monotonic() + self.heartbeat_interval
        return True

    def _batch(self, fetch: Callable[[int, int, int], Sequence[RawRow]]) -> tuple[list[OutMessage], int]:
        """The next rows, most urgent lane first, as Kafka records (unknown kinds: dead letters)."""
        messages: list[OutMessage] = []
        unknown: list[DeadLetter] = []
        room = self.batch_rows
        self._full = False
        for lane in self._lanes + sorted(set(self.spool.stored_lanes()) - set(self._lanes)):
            if room <= 0:
                break
            rows = fetch(lane, self._cursors.get(lane, 0), room)
            room -= len(rows)
            for row in rows:
                try:
                    messages.append(self._envelope.message(row, lane))
                except KeyError:
                    unknown.append(DeadLetter(row[0], lane, "unknown_kind", f"kind {row[1]} unknown"))
        self._full = room <= 0
        if unknown:
            self._dead += len(unknown)
            self.spool.settle(dead=unknown, wait=True)
        return messages, len(unknown)

    def _dead_letters(self, messages: Sequence[OutMessage], result: SendResult) -> list[DeadLetter]:
        dead = []
        for i, (reason, error) in result.permanent.items():
            m = messages[i]
            if m.seq is not None:
                dead.append(DeadLetter(m.seq, m.lane, reason, error))
        return dead

    def _settle_transaction(self, messages: Sequence[OutMessage], upto: Mapping[int, int],
                            result: SendResult) -> None:  # fmt: skip
        if result.permanent:  # nothing was committed: dead-letter the culprits, retry the rest
            dead = self._dead_letters(messages, result)
            self._dead += len(dead)
            if dead:
                self.spool.settle(dead=dead, wait=True)
            return
        shipped = sum(1 for m in messages if m.seq is not None)
        self._cursors.update(upto)
        if upto:
            self.spool.settle(delete_upto=upto)
        self._count(shipped)

    def _settle_acks(self, messages: Sequence[OutMessage], result: SendResult) -> None:
        """At-least-once: per lane, delete the leading run of delivered (or dead) records."""
        upto: dict[int, int] = {}
        blocked: set[int] = set()
        for i, m in enumerate(messages):
            if m.seq is None or m.lane in blocked:
                continue
            if i in result.transient:
                blocked.add(m.lane)
                continue
            upto[m.lane] = m.seq
        dead = [d for d in self._dead_letters(messages, result) if d.seq <= upto.get(d.lane, -1)]
        self._dead += len(dead)
        if upto or dead:
            self.spool.settle(delete_upto=upto, dead=dead, wait=bool(dead))
        self._cursors.update(upto)
        self._count(sum(1 for i, m in enumerate(messages) if m.seq is not None and i not in result.transient
                        and i not in result.permanent))  # fmt: skip
        if result.transient:
            raise UplinkError(f"{len(result.transient)} records not acknowledged by Kafka; retrying")

    def _count(self, shipped: int) -> None:
        self._shipped += shipped
        if shipped:
            self._last_shipped_at = self._clock()

    def _heartbeat(self, topic: str) -> OutMessage:
        s = self.spool.stats()
        now = self._clock()
        self._beat += 1
        data = {
            "gateway_id": self.gateway_id,
            "ts": now,
            "uptime_s": round(time.monotonic() - self._started, 3),
            "mode": "exactly_once" if self.exactly_once else "at_least_once",
            "spool": {
                "depth": s.depth,
                "bytes": s.bytes,
                "oldest_age_s": s.oldest_age,
                "dead_letters": s.dead_letters,
                "dropped": s.dropped,
            },
            "uplink": {"shipped": self._shipped, "reconnects": max(0, self._reconnects - 1)},
            "versions": self._versions,
        }
        if self._heartbeat_extra is not None:
            data.update(self._heartbeat_extra())
        return self._envelope.heartbeat(topic, data, now, self._beat)
