"""The durable spool: SQLite in WAL mode, one writer thread, group commit.

Write API (thread-safe, for the runtime)::

    spool = Spool.open(config.spool, lanes=lane_priorities(config.kafka.topics.of_kind()))
    spool.submit(items, on_durable)             # never blocks; on_durable() runs after the commit
    spool.submit(items, on_durable, on_void=void, marks=[(mid, digest)], state={"rule:x": {...}})
    spool.append_many(records)                  # blocking variant for tools and tests

``on_durable`` is called once, from the writer thread, after the group commit that holds
the batch: every row of it is on disk (``synchronous=NORMAL``: survives a killed process;
``FULL``: survives power loss), or was dropped by the stated policy (overflow, disk full),
counted and logged. It must be quick and must not block: for MQTT it hands the PUBACKs
to the client's loop. ``marks`` (the MQTT messages the batch took, see
gateway/ledger.py), ``state`` (rule-state rows) and ``dead`` (input no one could process)
are written in the same transaction as the batch's rows.

If the spool fails for good (an I/O error other than "full", or anything the writer
thread did not expect), ``on_void`` is called instead, once, for every batch it had not
committed: nobody will settle them. :meth:`Spool.submit` then raises
:class:`SpoolError`, :meth:`Spool.stats` says why, and :attr:`Spool.failed` is set.

The local rule path never waits for the spool: :meth:`Spool.submit` only appends to a
queue. Back-pressure comes from MQTT itself: PUBACKs wait for the commit, so the broker
stops sending once its in-flight window is full.
"""

from __future__ import annotations

import contextlib
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from bridge.config import SpoolConfig
from bridge.envelope import RawRow, SpoolRow
from bridge.groups import oldest_spooled_at, read_lane
from bridge.policy import PRIORITY_OF_KIND, Kind, Usage
from bridge.store import Store, connect
from bridge.writer import (
    Barrier,
    CommitPacer,
    DeadInput,
    DeadLetter,
    GroupWriter,
    OnDurable,
    Rebase,
    Settle,
    SpoolItem,
    Submit,
)
from common.libc import name_os_thread
from gateway.errors import SpoolError

__all__ = [
    "DeadInput",
    "DeadLetter",
    "OnDurable",
    "Spool",
    "SpoolItem",
    "SpoolReader",
    "SpoolRow",
    "SpoolStats",
]

_log = structlog.get_logger("edgegw.bridge.spool")


@dataclass(frozen=True, slots=True)
class SpoolStats:
    depth: int
    bytes: int
    by_priority: dict[int, Usage]
    oldest_age: float | None
    """Seconds since the oldest row still in the spool was spooled."""
    dropped: dict[str, int]
    dead_letters: int
    committed_rows: int
    commits: int
    pending: int
    """Items submitted and not yet committed."""
    commit_ms_p50: float | None
    commit_ms_p99: float | None
    durable_ms_p50: float | None
    """submit() to on_durable, per group (what a PUBACK waits)."""
    durable_ms_p99: float | None
    failed: str | None
    disk_full: bool = False
    """SQLite reported the disk full and the reserve file is not back yet."""
    syncs: int = 0
    """Times commits were made durable (fsync of the WAL; ``synchronous: full`` only)."""


class _SyncDone:
    """The ``on_durable`` of :meth:`Spool.append_many`: woken on failure too."""

    __slots__ = ("event",)

    def __init__(self) -> None:
        self.event = threading.Event()

    def __call__(self) -> None:
        self.event.set()


_STOP = object()


def _urgent(op: object) -> bool:
    """Someone waits on this operation (a flush, a rebase, a settle with ``wait``, an
    :meth:`Spool.append_many`, a close): its group is committed once the
    ``commit_interval`` window is over, not gathered on (see :class:`CommitPacer`)."""
    if isinstance(op, Submit):
        return isinstance(op.on_durable, _SyncDone)
    return op is _STOP or isinstance(op, Barrier | Rebase) or (isinstance(op, Settle) and op.done is not None)


def _percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Spool:
    """See the module docstring. Build with :meth:`open`; :meth:`close` when done."""

    def __init__(self, config: SpoolConfig, *, lanes: Mapping[Kind, int] | None = None,
                 clock: Any = time.time) -> None:  # fmt: skip
        self.config = config
        self.path = config.path
        self._clock = clock
        store = Store(config)
        self._store = store
        self.spool_id = store.spool_id
        self.migrated_from = store.old_version
        self._loaded_marks = store.load_origins()
        self._opened_seq = store.next_seq
        self._loaded_state = store.load_state()
        self._writer = GroupWriter(
            store, config, {int(k): int(v) for k, v in (lanes or PRIORITY_OF_KIND).items()}, clock
        )
        self.data_ready = self._writer.data_ready
        """Set after each commit that added rows (the forwarder waits on it)."""
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._wake = threading.Event()
        """Set when an operation someone waits on is queued: it ends a batching nap."""
        self._pending = 0
        self._nap_room: list[int] | None = None
        """While the writer naps gathering a group on: how many more QoS 1 messages and rows
        the group may take before the pacer would commit it anyway (``commit_batch_acks``,
        ``commit_batch_rows``). A submit that uses either up ends the nap: a nap is sized
        from the recent rate, and a burst after a quiet spell (5k readings/s after minutes of
        nothing) filled the broker's in-flight window within it, holding the readings behind
        the window, and the rules they fire, at the broker for the rest of the nap."""
        self._lock = threading.Lock()
        self._failed: SpoolError | None = None
        self._closed = False
        self._stats_conn: sqlite3.Connection | None = None
        self._stats_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="edgegw-spool-writer", daemon=True)

    @classmethod
    def open(cls, config: SpoolConfig, *, lanes: Mapping[Kind, int] | None = None,
             clock: Any = time.time) -> Spool:  # fmt: skip
        spool = cls(config, lanes=lanes, clock=clock)
        spool._thread.start()
        _log.info("spool open", path=str(spool.path), spool_id=spool.spool_id,
                  depth=sum(u.rows for u in spool._store.usage.values()),
                  synchronous=config.synchronous)  # fmt: skip
        return spool

    # ------------------------------------------------------------------ writing
    def submit(self, items: Sequence[SpoolItem], on_durable: OnDurable | None = None, *,
               on_void: OnDurable | None = None, marks: Sequence[tuple[int, int]] = (),
               state: Mapping[str, Any] | None = None, dead: Sequence[DeadInput] = ()) -> Submit:  # fmt: skip
        """Queue ``items`` for the next group commit; never blocks. See the module docstring.
        Returns the queued batch: its ``last_seq`` is set once it is committed."""
        if self._failed is not None:
            raise self._failed
        if self._closed:
            raise SpoolError("spool is closed")
        full = False
        with self._lock:
            self._pending += len(items)
            room = self._nap_room
            if room is not None:
                room[0] -= len(marks)
                room[1] -= len(items)
                full = room[0] <= 0 or room[1] <= 0
                if full:
                    self._nap_room = None
        op = Submit(items, on_durable, on_void=on_void, marks=marks, state=state, dead=dead)
        self._put(op)
        if full:  # the group it joins is full: end the writer's nap
            self._wake.set()
        if self.failed is not None:  # the writer failed while we queued: nobody else will void it
            self._void_queue([])
        return op

    @property
    def pending(self) -> int:
        """Items submitted and not committed yet: what the spool holds in memory."""
        return self._pending

    def append_many(self, items: Sequence[SpoolItem], *, marks: Sequence[tuple[int, int]] = (),
                    state: Mapping[str, Any] | None = None,
                    timeout: float | None = 60.0) -> None:  # fmt: skip
        """Submit and wait until the batch is durable (tools, tests, benchmarks)."""
        done = _SyncDone()
        self.submit(items, done, on_void=done, marks=marks, state=state)
        self._wait(done.event, timeout)

    def settle(self, delete_upto: Mapping[int, int] | None = None, dead: Sequence[DeadLetter] = (), *,
               wait: bool = False, timeout: float | None = 60.0) -> None:  # fmt: skip
        """Forwarder side: move ``dead`` rows to the dead-letter table, then delete each lane's
        rows up to its sequence, in one transaction."""
        done = threading.Event() if wait else None
        self._put(Settle(dict(delete_upto or {}), list(dead), done))
        if done is not None:
            self._wait(done, timeout)

    def rebase(self, floor: int, timeout: float | None = 60.0) -> int:
        """Make sure no row of this run has a sequence at or below ``floor`` (the highest
        sequence Kafka's checkpoint knows): after a power cut under ``synchronous=normal``
        the file can come back older than what was shipped, and new rows would reuse
        sequences the forwarder takes for shipped. Returns how many rows were renumbered.
        The forwarder calls it when it reads the checkpoint, before it ships anything."""
        op = Rebase(floor)
        self._put(op)
        self._wait(op.done, timeout)
        return op.moved

    def flush(self, timeout: float | None = 60.0) -> None:
        """Wait until everything queued before this call is committed."""
        barrier = Barrier()
        self._put(barrier)
        self._wait(barrier.done, timeout)

    def _put(self, op: object) -> None:
        """Queue ``op`` for the writer; one someone waits on also ends a batching nap."""
        self._queue.put(op)
        if _urgent(op):
            self._wake.set()

    def _wait(self, done: threading.Event, timeout: float | None) -> None:
        if not done.wait(timeout):
            raise SpoolError(f"spool writer did not commit within {timeout} s")
        if self._failed is not None:
            raise self._failed

    def close(self, timeout: float = 30.0) -> None:
        """Commit what is queued, checkpoint, close. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._put(_STOP)
        self._thread.join(timeout)
        if self._failed is not None and not self._thread.is_alive():
            with contextlib.suppress(sqlite3.Error):  # the writer died without closing it
                self._store.conn.close()
            self._store.close_wal()
        with self._stats_lock:
            if self._stats_conn is not None:
                self._stats_conn.close()
                self._stats_conn = None

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def committed_seq(self) -> int:
        """The next row sequence as of the last commit: every row below it is committed."""
        return self._store.committed_seq

    @property
    def durable_seq(self) -> int:
        """The next row sequence as of the last fsync: every row below it is on disk. A
        reader that ships rows stops here (below :attr:`committed_seq` while commits wait
        for a deferred sync, :meth:`bridge.store.Store.defer_sync`)."""
        return self._writer.durable_seq

    @property
    def checkpoint_floor(self) -> int | None:
        """The highest sequence the first Kafka checkpoint read after open knew (None until
        the forwarder read one; it stays None without a Kafka uplink)."""
        return self._store.checkpoint_floor

    @property
    def opened_seq(self) -> int:
        """The next row sequence when the file was opened."""
        return self._opened_seq

    @property
    def writer_alive(self) -> bool:
        """The writer thread runs (False after a failure, or once closed)."""
        return self._thread.is_alive()

    def marks(self) -> list[tuple[int, int]]:
        """(packet id, digest) of the MQTT messages taken last, oldest first, as committed
        when the spool was opened (see gateway/ledger.py)."""
        return [(mid, digest) for mid, digest, _at in self._loaded_marks]

    def rule_state(self) -> dict[str, Any]:
        """The rule-state rows as committed when the spool was opened."""
        return dict(self._loaded_state)

    @property
    def failed(self) -> SpoolError | None:
        """Why the writer stopped for good (an I/O error other than "full"), else None.
        The runtime then reopens the spool; nothing committed before is lost."""
        return self._failed

    # ------------------------------------------------------------------ reading
    @property
    def lanes(self) -> dict[int, int]:
        """Drain lane (stored priority) of each kind."""
        return dict(self._writer.lanes)

    def stored_lanes(self) -> list[int]:
        """Lanes that hold rows now (a lane of an earlier topic mapping may linger)."""
        return [p for p, u in dict(self._store.usage).items() if u.rows > 0]

    def reader(self) -> SpoolReader:
        """A read-only connection for one thread (the forwarder's)."""
        return SpoolReader(self)

    def stats(self) -> SpoolStats:
        store, w = self._store, self._writer
        usage = dict(store.usage)
        oldest: float | None = None
        pending = self._pending
        with self._stats_lock:  # not the submit lock: the rule path never waits on a stats query
            try:
                if self._stats_conn is None and not self._closed:
                    self._stats_conn = connect(self.path, readonly=True)
                if self._stats_conn is not None and any(u.rows for u in usage.values()):
                    oldest = oldest_spooled_at(self._stats_conn)  # any lane's: the table's head
            except (sqlite3.Error, SpoolError) as exc:
                _log.debug("spool: stats query failed", error=str(exc))
        commit_ms, durable_ms = list(w.commit_ms), list(w.durable_ms)
        return SpoolStats(
            depth=sum(u.rows for u in usage.values()),
            bytes=sum(u.bytes for u in usage.values()),
            by_priority=usage,
            oldest_age=None if oldest is None else max(0.0, self._clock() - oldest),
            dropped=dict(store.drops),
            dead_letters=store.dead_letters,
            committed_rows=w.committed_rows,
            commits=w.commits,
            syncs=w.syncs,
            pending=pending,
            commit_ms_p50=_percentile(commit_ms, 0.5),
            commit_ms_p99=_percentile(commit_ms, 0.99),
            durable_ms_p50=_percentile(durable_ms, 0.5),
            durable_ms_p99=_percentile(durable_ms, 0.99),
            failed=None if self._failed is None else str(self._failed),
            disk_full=w.disk_full,
        )

    # ------------------------------------------------------------------ writer thread
    def _run(self) -> None:
        name_os_thread("edgegw-spool")
        pacer = CommitPacer(self.config.commit_interval, self.config.commit_max_delay,
                            self.config.commit_batch_rows, self.config.commit_batch_acks)  # fmt: skip
        writer = self._writer
        if self.config.synchronous == "full" and pacer.defers_sync:
            self._store.defer_sync()
        monotonic = time.monotonic
        stop = False
        while not stop:
            held_since = writer.held_since
            wait = 1.0 if held_since is None else pacer.hold_wait(held_since, monotonic())
            try:
                first = self._queue.get(timeout=wait)
            except queue.Empty:
                first = None
                if held_since is not None:  # nothing more came: make the held commits durable
                    if not self._sync():
                        return
                    continue
            group, rows, urgent, stalled = self._gather(first, pacer)
            stop = bool(group) and group[-1] is _STOP
            try:
                settled = writer.group(group, side_rows=pacer.side_rows)
            except Exception as exc:  # noqa: BLE001 - any failure ends the writer, recorded, never silent
                self._fail(exc, group)
                return
            held_since = writer.held_since
            due = held_since is not None and (
                urgent or stop or pacer.sync_due(writer.held_acks, held_since, monotonic(), stalled=stalled)
            )
            if due and not self._sync():
                return
            if group:
                pacer.committed(rows, monotonic())
            with self._lock:
                self._pending -= settled
        self._store.close()

    def _gather(self, first: object, pacer: CommitPacer) -> tuple[list[Any], int, bool, bool]:
        """One group: ``first`` and what queues behind it within ``commit_interval`` (up to
        ``commit_rows`` rows), gathered on as the pacer says. Returns the group, its rows,
        whether someone waits on it, and whether it ended as a nap brought nothing."""
        get_nowait = self._queue.get_nowait
        monotonic = time.monotonic
        group = [] if first is None else [first]
        rows = len(first.items) if isinstance(first, Submit) else 0
        acks = len(first.marks) if isinstance(first, Submit) else 0
        first_at = first.at if isinstance(first, Submit) else monotonic()
        deadline = monotonic() + self.config.commit_interval
        urgent = _urgent(first)
        napped_at: int | None = None
        while rows < self.config.commit_rows and group and group[-1] is not _STOP:
            try:
                op = get_nowait()
            except queue.Empty:
                now = monotonic()
                remaining = deadline - now
                room = None
                if remaining <= 0:
                    # gather on (see CommitPacer) unless someone waits on this group
                    remaining = 0.0 if urgent else pacer.gather_on(rows, first_at, now, napped_at, acks)
                    if remaining <= 0:
                        return group, rows, urgent, napped_at is not None and rows <= napped_at
                    napped_at = rows
                    room = [pacer.batch_acks - acks, pacer.batch_rows - rows]
                self._nap(remaining, room)
                continue
            group.append(op)
            if isinstance(op, Submit):
                rows += len(op.items)
                acks += len(op.marks)
            if _urgent(op):
                urgent = True
        return group, rows, urgent, False

    def _nap(self, seconds: float, room: list[int] | None) -> None:
        """Sleep out the window (or a nap gathering on, with ``room`` left in the group), then
        the caller takes what came: waiting on the queue instead woke this thread (and made
        it fight for the GIL) once per submitted batch. An operation someone waits on (a
        flush, a close...) ends it, and so does a submit that fills ``room``."""
        if room is not None:
            with self._lock:
                self._nap_room = room
        if self._wake.wait(seconds):
            self._wake.clear()
        if room is not None:
            with self._lock:
                self._nap_room = None

    def _sync(self) -> bool:
        """Make the held commits durable; False when that failed (the writer is done)."""
        try:
            self._writer.sync()
        except Exception as exc:  # noqa: BLE001 - as a failed commit: _fail voids the held groups
            self._fail(exc, [])
            return False
        return True

    def _fail(self, exc: Exception, group: list[Any]) -> None:
        """The writer stops for good: record why, void every batch it had not committed."""
        if isinstance(exc, SpoolError):
            self._failed = exc
        elif isinstance(exc, sqlite3.Error):
            self._failed = SpoolError(f"spool write failed: {exc}")
        else:
            self._failed = SpoolError(f"spool writer failed: {type(exc).__name__}: {exc}")
        with contextlib.suppress(Exception):  # a log that cannot be written must not stop the voiding
            _log.error("spool failed", path=str(self.path), error=str(self._failed), exc_info=exc)
        with contextlib.suppress(Exception):
            self._store.rollback()
        held = self._writer.take_held()  # committed, maybe not on disk: their messages come again
        for on_void in held:
            _call_void(on_void)
        voided = self._void_queue(group) + len(held)
        with contextlib.suppress(Exception):
            _log.error("spool: batches not committed were voided", batches=voided)

    def _void_queue(self, group: list[Any]) -> int:
        """Wake the waiters of ``group`` and of everything still queued; call ``on_void``."""
        voided = 0
        while True:  # wake every waiter: they see the failure
            for op in group:
                if isinstance(op, Settle | Barrier | Rebase) and op.done is not None:
                    op.done.set()
                elif isinstance(op, Submit) and op.on_void is not None:
                    voided += 1
                    _call_void(op.on_void)
            try:
                group = [self._queue.get_nowait()]
            except queue.Empty:
                break
        with self._lock:
            self._pending = 0
        return voided


def _call_void(on_void: OnDurable) -> None:
    try:
        on_void()
    except Exception:  # noqa: BLE001 - a caller's callback must not hide the failure
        with contextlib.suppress(Exception):
            _log.exception("spool: on_void callback failed")


class SpoolReader:
    """Reads a spool's lanes in order, on a read-only connection of its own (of a
    :class:`Spool` in this process, or of a spool file another process writes)."""

    def __init__(self, spool: Spool | Path, *, horizon: Callable[[], int | None] | None = None) -> None:
        """``horizon``: the sequence below which rows are on disk (``durable_seq``; None or
        not given: every committed row). A :class:`Spool` passes its own."""
        if not isinstance(spool, Path):
            horizon = horizon or (lambda: spool.durable_seq)
        self._conn = connect(spool if isinstance(spool, Path) else spool.path, readonly=True)
        self._horizon = horizon

    def fetch(self, lane: int, after: int, limit: int) -> list[SpoolRow]:
        """Rows of ``lane`` with sequence > ``after``, oldest first."""
        return [SpoolRow(*r) for r in self.fetch_raw(lane, after, limit)]

    def fetch_raw(self, lane: int, after: int, limit: int) -> list[RawRow]:
        """:meth:`fetch` as plain tuples (the forwarder's hot path: a NamedTuple per row costs
        more than the query)."""
        upto = None if self._horizon is None else self._horizon()
        try:
            return read_lane(self._conn, lane, after, limit, upto)
        except (sqlite3.Error, ValueError) as exc:  # ValueError: a group this edgegw cannot unpack
            raise SpoolError(f"cannot read spool: {exc}") from exc

    def close(self) -> None:
        self._conn.close()
