"""Group commit: what the spool's writer thread does with one group of queued operations.

A group is every operation queued within ``commit_interval`` of the first one (or
``commit_rows`` rows); then it gathers on, up to ``commit_max_delay`` at a low rate and
``CommitPacer.FILL_S`` above, until it holds ``commit_batch_rows`` rows (:class:`CommitPacer`).
It becomes one SQLite transaction: the cap is applied (overflow policy), dead letters are
moved and shipped rows deleted, TTL is enforced, rows and MQTT digests are inserted. On
SQLite's full condition (disk or ``max_page_count``) the transaction is rolled back, rows
are dropped by the same policy (reason ``disk_full``) and it is retried. Only then do the
``on_durable`` callbacks run.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from bridge.config import SpoolConfig
from bridge.envelope import Record, encode_item
from bridge.policy import ROW_OVERHEAD, DropReason, overflow_plan
from bridge.store import Store, is_full
from gateway.errors import SpoolError
from gateway.model import Command, Event, Reading

__all__ = ["Barrier", "CommitPacer", "DeadInput", "DeadLetter", "GroupWriter", "OnDurable", "Rebase",
           "Settle", "SpoolItem", "Submit"]  # fmt: skip

_log = structlog.get_logger("edgegw.bridge.spool")

OnDurable = Callable[[], None]
SpoolItem = Reading | Event | Command | Record
Row = list[Any]  # [prio, seq, kind, key, ts, spooled_at, data]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A row Kafka refused for good: moved to the dead-letter table with why."""

    seq: int
    lane: int
    reason: str
    error: str


class Submit:
    """One batch for the next group commit; see :meth:`bridge.spool.Spool.submit`."""

    __slots__ = ("at", "dead", "items", "last_seq", "marks", "on_durable", "on_void", "state")

    def __init__(self, items: Sequence[SpoolItem], on_durable: OnDurable | None, *,
                 on_void: OnDurable | None = None, marks: Sequence[tuple[int, int]] = (),
                 state: Mapping[str, Any] | None = None, dead: Sequence[DeadInput] = ()) -> None:  # fmt: skip
        self.items = items
        self.on_durable = on_durable
        self.on_void = on_void
        self.marks = marks
        self.state = state
        self.dead = dead
        self.at = time.monotonic()
        self.last_seq = 0
        """The highest row sequence the writer gave this batch (set before on_durable runs)."""


@dataclass(frozen=True, slots=True)
class DeadInput:
    """An input message that could not be processed (a decoder or a rule raised): kept in
    the dead-letter table with its topic and payload, in the same transaction as its batch."""

    key: str
    """The MQTT topic (or the sensor, for a reading a rule could not take)."""
    data: bytes
    reason: str
    error: str


@dataclass
class Settle:
    delete_upto: Mapping[int, int]
    dead: Sequence[DeadLetter]
    done: threading.Event | None = None


@dataclass
class Barrier:
    done: threading.Event = field(default_factory=threading.Event)


@dataclass
class Rebase:
    """Kafka's checkpoint knows sequences up to ``floor``: no row of this run may sit at or
    below it (see :meth:`bridge.spool.Spool.rebase`)."""

    floor: int
    done: threading.Event = field(default_factory=threading.Event)
    moved: int = 0


class CommitPacer:
    """How long the writer thread gathers a group (pure: the caller passes the clock).

    Every group gathers for ``commit_interval`` after its first operation, as it always
    did. Then it gathers on until it holds ``commit_batch_rows`` rows (or
    ``commit_batch_acks`` QoS 1 messages) or its first batch has waited the delay. At a
    trickle (a house at 100 readings/s, one MQTT message per submit) that makes a few
    commits a second instead of one per message: a commit costs a transaction, an fsync
    under ``synchronous=full`` and several pages written twice (WAL, then checkpoint)
    however few rows it holds.

    The delay follows the recent rate (rows committed per second over the last half
    second or more): up to ``commit_batch_rows`` per ``commit_max_delay`` or per
    ``HOUSE_S``, the shorter (256/s), a group may gather for the whole ``commit_max_delay``
    (2 s by default), above for ``FILL_S`` at most. Above ``commit_batch_rows`` per
    ``FILL_S`` (2,560 rows/s) a group gathers only when the broker's window is wide
    (:attr:`wide`, MQTT 5): at 5k readings/s a group used to be what queued while the
    previous one committed (~18 rows, ~280 commits a second: ~22x the payload written to
    the card); it now gathers its 256 rows in ~50 ms (19 commits a second, 2.2-2.5x;
    ``bench.home_rates``, MQTT 5). On MQTT 3.1.1 such a group commits after its window.

    While it gathers on, the thread naps (it is not woken per submitted batch) for the
    time a few more batches should take at the recent rate (at least ``commit_interval``,
    never past the delay), and commits as soon as a nap brought nothing: a sender that
    stopped, or a broker whose in-flight window is full and waits for these very PUBACKs,
    is not kept waiting for the rest of the delay. Below one row per ``commit_max_delay``
    (no rate yet, or a lone event after a quiet spell: a command's answer, a heartbeat)
    the nap is short (``QUIET_NAP``), so a lone event does not wait out the delay. Durability is unchanged:
    ``on_durable`` (the PUBACKs) still runs only after the commit, later by at most
    ``commit_max_delay``.

    On a wide window (:attr:`defers_sync`) under ``synchronous: full`` a few commits of
    short groups share one fdatasync (:meth:`sync_due`, :meth:`bridge.store.Store.defer_sync`):
    their ``on_durable`` runs after it, within ``SYNC_S`` of the first submit.
    """

    RATE_PERIOD_S = 0.5
    """The recent rate is rows committed over at least this long."""
    NAP_ROWS = 4
    """A nap lasts as long as this many rows should take to come at the recent rate."""
    FILL_S = 0.1
    """Above ``commit_batch_rows`` per ``HOUSE_S`` (256 rows/s by default) a group gathers
    for this long at most. A long delay makes a house's groups larger; at 1k readings/s groups of 256 rows
    put the event loop's command p99 at 3.4-3.7 ms (groups of 0.1 s: 1.3-2.2 ms), as the
    writer's Python work for a group holds the GIL in one burst (bench.home_rates, MQTT 5)."""
    HOUSE_S = 1.0
    """A group may gather for the whole ``commit_max_delay`` below ``commit_batch_rows``
    rows per this long (256 rows/s by default), whatever the delay: with the delay as the
    measure, a 2 s delay put that edge at 128 rows/s, and a house just above it went from
    one commit in 2 s to ten a second."""
    MIN_NAP = 0.01
    """The shortest nap while a group gathers on with a wide window (:attr:`wide`): at 5k
    rows/s ``NAP_ROWS`` would be 0.8 ms, a wake of the writer thread every
    ``commit_interval``."""
    QUIET_NAP = 0.02
    """The nap when under one row per ``commit_max_delay`` came recently (no rate yet, or a
    quiet spell): a lone event waits this long more, a trickle that began keeps coming."""
    ACKS_PER_GROUP = 16
    """By default (``commit_batch_acks``) a group holding this many QoS 1 messages is
    committed without gathering on. A broker
    stops sending once its in-flight window of unacknowledged messages is full (Mosquitto's
    default ``max_inflight_messages`` is 20): a group that held the whole window would wait
    for a nap to bring nothing before every commit, and the readings behind the window, the
    rules they fire included, would wait at the broker (measured with a window of 20 at
    1k readings/s: command p99 2.9 ms before time batching, 73 ms with it, without this)."""

    SIDE_COMMITS = 50.0
    """Side rows (:attr:`bridge.store.Store.side_rows`) are kept while the writer commits
    at most this often a second (groups gather at every rate, so 10k MQTT 5 readings/s
    commit ~40 times a second); above (MQTT 3.1.1's window of 16 messages commits
    hundreds of times a second) rule state and packet ids are upserted in place."""

    SYNC_S = 0.5
    """With deferred syncs (:attr:`defers_sync`) a commit waits at most this long (from its
    group's first submit) for the fdatasync that makes it durable."""

    __slots__ = ("_period_commits", "_period_rows", "_period_start", "batch_acks", "batch_rows",
                 "commit_rate", "interval", "max_delay", "rate")  # fmt: skip

    def __init__(self, interval: float, max_delay: float, batch_rows: int,
                 batch_acks: int = ACKS_PER_GROUP) -> None:  # fmt: skip
        self.interval = interval
        self.max_delay = max_delay
        self.batch_rows = batch_rows
        self.batch_acks = batch_acks
        self.rate = 0.0
        """Rows per second committed recently (0 until a period went by)."""
        self.commit_rate = 0.0
        """Commits per second recently."""
        self._period_start: float | None = None
        self._period_rows = 0
        self._period_commits = 0

    @property
    def gathers(self) -> bool:
        """A group gathers past ``commit_interval`` at all (``commit_max_delay`` longer)."""
        return self.max_delay > self.interval and self.batch_rows > 1

    @property
    def wide(self) -> bool:
        """The broker's in-flight window does not end a group before its rows do (MQTT 5:
        ``commit_batch_acks`` 500 against 256 rows). Only then does a group gather above
        the low rate, and nap ``MIN_NAP`` at least: on MQTT 3.1.1 (16 messages of
        Mosquitto's 20) a group gathered at 5k/s holds most of the window, and the
        readings behind it wait at the broker."""
        return self.batch_acks >= self.batch_rows

    @property
    def low_rate(self) -> bool:
        """A batch would not fill within the delay (or ``FILL_S``, the shorter) at the
        recent rate."""
        return self.gathers and self.rate * min(self.max_delay, self.FILL_S) < self.batch_rows

    @property
    def delay(self) -> float:
        """How long a group may gather at the recent rate: ``commit_max_delay`` while
        ``commit_batch_rows`` rows take longer than that or than ``HOUSE_S`` (the shorter)
        to come (a house), else at most ``FILL_S`` (a busier gateway: groups as large as
        before the delay was raised). A group of a house still commits at
        ``commit_batch_rows`` rows: a delay over ``HOUSE_S`` makes a trickle's groups
        larger, and does not move the rate where groups turn short."""
        if self.rate * min(self.max_delay, self.HOUSE_S) < self.batch_rows:
            return self.max_delay
        return min(self.max_delay, self.FILL_S)

    def gather_on(self, rows: int, first_at: float, now: float, napped_at_rows: int | None,
                  acks: int = 0) -> float:  # fmt: skip
        """The group holds ``rows`` rows and ``acks`` QoS 1 messages waiting for their PUBACK,
        its first batch was queued at ``first_at``, the ``commit_interval`` window is over
        and the queue is empty; ``napped_at_rows`` is how many rows it held before the last
        nap (None: no nap yet). Seconds to nap before looking again, or 0 to commit now."""
        if not self.gathers or rows >= self.batch_rows or acks >= self.batch_acks:
            return 0.0
        if not self.low_rate and not self.wide:
            return 0.0  # the broker's window ends a group within the window anyway
        if napped_at_rows is not None and rows <= napped_at_rows:
            return 0.0  # the last nap brought nothing: the sender stopped or waits for us
        left = first_at + self.delay - now
        if left <= 0:
            return 0.0
        if self.rate * self.max_delay < 1.0:  # not one more row expected within the delay
            return min(left, max(self.interval, self.QUIET_NAP))
        nap = self.NAP_ROWS / self.rate
        return min(left, max(self.interval, max(nap, self.MIN_NAP) if self.wide else nap))

    def committed(self, rows: int, now: float) -> None:
        """A group of ``rows`` rows was committed at ``now``: update the recent rate."""
        if self._period_start is None:
            self._period_start = now
            self._period_rows = rows
            self._period_commits = 1
            return
        self._period_rows += rows
        self._period_commits += 1
        elapsed = now - self._period_start
        if elapsed >= self.RATE_PERIOD_S:
            self.rate = self._period_rows / elapsed
            self.commit_rate = self._period_commits / elapsed
            self._period_start = now
            self._period_rows = 0
            self._period_commits = 0

    @property
    def defers_sync(self) -> bool:
        """Groups may be synced a few commits at a time (:meth:`bridge.store.Store.defer_sync`;
        ``synchronous: full`` is the caller's to check): they gather and the window is wide."""
        return self.gathers and self.wide

    def sync_due(self, held_acks: int, held_since: float, now: float, *, stalled: bool) -> bool:
        """After a commit with deferred syncs: fdatasync now? ``held_acks`` QoS 1 messages
        wait for their PUBACK in the commits not synced yet, the oldest submitted at
        ``held_since``; ``stalled``: the group ended because a nap brought nothing.

        Yes when groups are long already (a house: each waited up to ``commit_max_delay``),
        when the sender stopped or waits for these PUBACKs (``stalled``), when one more
        group could take the messages waiting past ``commit_batch_acks`` (half the
        broker's window: a window kept half free never holds the readings back), or when
        the oldest has waited ``SYNC_S``. At 1k readings/s that is one sync every 3
        commits of 0.1 s instead of one per commit."""
        if stalled or self.delay >= self.SYNC_S:
            return True
        if held_acks + self.batch_rows > self.batch_acks:
            return True
        return now - held_since >= self.SYNC_S

    def hold_wait(self, held_since: float, now: float) -> float:
        """With commits held and the queue empty: how long to wait for more before syncing
        (a sender that paused gets its PUBACKs within a few expected arrivals)."""
        expected = self.NAP_ROWS / self.rate if self.rate > 0 else self.QUIET_NAP
        return max(0.0, min(held_since + self.SYNC_S - now, max(self.QUIET_NAP, expected)))

    @property
    def side_rows(self) -> bool:
        """Log rule state and packet ids as side rows (groups gather and commit a few dozen
        times a second at most), or upsert them (time batching off, or many commits)."""
        return self.gathers and (self.low_rate or self.commit_rate <= self.SIDE_COMMITS)


@dataclass
class _Group:
    rows: list[Row] = field(default_factory=list)
    origins: list[tuple[int, int, float]] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)
    dead: list[DeadInput] = field(default_factory=list)
    callbacks: list[OnDurable] = field(default_factory=list)
    voids: list[OnDurable] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    settles: list[Settle] = field(default_factory=list)
    barriers: list[Barrier] = field(default_factory=list)
    submitted: int = 0
    oldest_submit: float | None = None


class GroupWriter:
    """Turns groups of operations into transactions on a :class:`Store` (writer thread only)."""

    def __init__(self, store: Store, config: SpoolConfig, lanes: Mapping[int, int],
                 clock: Callable[[], float]) -> None:  # fmt: skip
        self.store = store
        self.config = config
        self.lanes = lanes
        self.clock = clock
        self.data_ready = threading.Event()
        self.committed_rows = 0
        self.commits = 0
        self.commit_ms: deque[float] = deque(maxlen=4096)
        self.durable_ms: deque[float] = deque(maxlen=4096)
        self._next_maintenance = 0.0
        self.syncs = 0
        """Times commits were made durable (``synchronous: full``): one per commit, or one per
        few with deferred syncs."""
        self.durable_seq = store.committed_seq
        """Rows below this sequence are on disk (fsync): a reader that ships rows stops here."""
        self.held: list[_Group] = []
        """Groups committed and not synced yet (``store.deferred_sync``): their ``on_durable``
        (the PUBACKs) waits for :meth:`sync`."""
        self.held_since: float | None = None
        """When the oldest held group's first batch was submitted (``time.monotonic``)."""
        self.full_cap: int | None = None
        self.disk_full = False
        """Set when SQLite reported the disk full; cleared once the reserve file is made again."""
        self._unrecorded: list[tuple[str, int, int, int]] = []
        """Drops (reason, priority, rows, bytes) decided but not yet in a committed transaction."""
        """A cap learned from a full disk: the bytes that fitted. Lifted when room returns."""

    def group(self, ops: Sequence[object], *, side_rows: bool = True) -> int:
        """Commit one group; returns how many submitted items it settled. ``side_rows``:
        few enough commits a second for side rows (see :attr:`bridge.store.Store.side_rows`)."""
        self.store.side_rows = side_rows
        now = self.clock()
        rebased = False
        for op in ops:  # first: every row of this group then gets a sequence above the floor
            if isinstance(op, Rebase):
                rebased = self._rebase(op) or rebased
        g = _Group()
        for op in ops:
            if isinstance(op, Submit):
                self._take(op, g, now)
            elif isinstance(op, Settle):
                g.settles.append(op)
            elif isinstance(op, Barrier):
                g.barriers.append(op)
        maintenance = now >= self._next_maintenance
        if maintenance and self.store.replaced():
            # deleted (or replaced) under us: SQLite would go on writing to a file nobody
            # can open again. Copy what it holds back to the path, then fail: the runtime
            # reopens the copy and nothing committed is lost.
            where = self.store.rescue()
            raise SpoolError(f"spool file {self.store.path} was deleted or replaced while open; "
                             f"its content was saved to {where}")  # fmt: skip
        writes = bool(g.rows or g.settles or g.origins or g.state or g.dead)
        if writes or g.skipped or maintenance:  # skipped: their drop counts are recorded
            started = time.monotonic()
            self._write(g, now, maintenance)
            if writes:
                self.commits += 1
                self.commit_ms.append((time.monotonic() - started) * 1000)
        self.committed_rows += len(g.rows)
        self._committed(g, writes or rebased)
        return g.submitted

    def _committed(self, g: _Group, writes: bool) -> None:
        if self.store.deferred_sync and (writes or self.held):  # in order: a flush waits for the held
            self.held.append(g)
            if self.held_since is None:
                self.held_since = time.monotonic() if g.oldest_submit is None else g.oldest_submit
            return
        if writes and self.config.synchronous == "full":
            self.syncs += 1  # SQLite's own, inside the commit
        self.durable_seq = self.store.committed_seq
        self._durable(g)

    def sync(self, *, force: bool = False) -> None:
        """Make the held groups durable (one fdatasync of the WAL; ``force``: even with none
        held, for a commit of the writer's own), then run their ``on_durable`` and wake the
        readers. On an error the groups stay held: the caller fails the writer, which voids
        them (:meth:`take_held`)."""
        if not self.held and not force:
            return
        self.store.sync_wal(required=True)
        self.syncs += 1
        held = self.held
        self.held, self.held_since = [], None
        self.durable_seq = self.store.committed_seq
        for g in held:
            self._durable(g)

    def take_held(self) -> list[OnDurable]:
        """The ``on_void`` of every held group's batches, forgetting the groups (the writer
        failed: their commits may not be on disk, so their messages must come again)."""
        voids = [v for g in self.held for v in g.voids]
        for g in self.held:
            self._release(g)
        self.held, self.held_since = [], None
        return voids

    @property
    def held_acks(self) -> int:
        """QoS 1 messages of the held groups (waiting for their PUBACK)."""
        return sum(len(g.origins) for g in self.held)

    def _durable(self, g: _Group) -> None:
        if g.rows:
            self.data_ready.set()
        if g.oldest_submit is not None:
            self.durable_ms.append((time.monotonic() - g.oldest_submit) * 1000)
        self._notify(g)

    @staticmethod
    def _notify(g: _Group) -> None:
        for callback in g.callbacks:
            try:
                callback()
            except Exception:  # noqa: BLE001 - a caller's callback must never stop the writer
                _log.exception("spool: on_durable callback failed")
        GroupWriter._release(g)

    @staticmethod
    def _release(g: _Group) -> None:
        """Wake whoever waits on the group's settles and barriers."""
        for s in g.settles:
            if s.done is not None:
                s.done.set()
        for b in g.barriers:
            b.done.set()

    def _take(self, op: Submit, g: _Group, now: float) -> None:
        """Encode one submitted batch into rows; gather its marks, rule state and dead inputs."""
        store = self.store
        lanes = self.lanes
        g.submitted += len(op.items)
        if g.oldest_submit is None:
            g.oldest_submit = op.at
        for item in op.items:
            try:
                kind, key, ts, data = encode_item(item)
            except (ValueError, TypeError) as exc:
                g.skipped["unencodable"] += 1
                _log.warning("spool: item dropped, not encodable", error=str(exc))
                continue
            g.rows.append([lanes.get(kind, 2), store.next_seq, kind, key, ts, now, data])
            store.next_seq += 1
        op.last_seq = store.next_seq - 1
        if op.marks:
            g.origins += [(mid, digest, now) for mid, digest in op.marks]
        if op.state:
            g.state.update(op.state)  # later batches' state of a rule wins
        if op.dead:
            g.dead += op.dead
        if op.on_durable is not None:
            g.callbacks.append(op.on_durable)
        if op.on_void is not None:
            g.voids.append(op.on_void)

    def _write(self, g: _Group, now: float, maintenance: bool) -> None:
        """One transaction; on SQLite's full condition, drop by policy and retry.

        Drops decided outside a committed transaction (rows taken out of the batch to make
        room, a group given up) wait in ``self._unrecorded`` and are written by the next
        transaction that commits, so ``spool status`` and ``/metrics`` count every one.
        """
        store = self.store
        rows, origins, settles, skipped = g.rows, g.origins, g.settles, g.skipped
        state, dead = g.state, g.dead
        for attempt in range(12):
            try:
                store.begin()
                kept = self._apply_cap(rows) if rows else rows
                for s in settles:
                    self._settle(s, now)
                if maintenance:
                    self._maintain(now)
                store.insert(kept)
                self._side_rows(origins, state, dead, now)
                for reason, count in skipped.items():
                    store.count_drop(reason, 2, count, 0)
                for reason, prio, n, size in self._unrecorded:
                    store.count_drop(reason, prio, n, size)
                store.save_next_seq()
                store.commit()
            except sqlite3.Error as exc:
                store.rollback()
                self._reload_counters()
                if not is_full(exc):
                    raise
                self.disk_full = True
                if attempt == 11:
                    self._give_up(rows, skipped, exc)
                    g.rows = []  # none of them is in the file (committed_rows must not count them)
                    return
                rows = self._free_space(rows, attempt)
                continue
            store.committed_seq = store.next_seq
            if self._unrecorded:
                self._unrecorded.clear()
                store.reload_counters()  # the in-memory figures counted these twice
            if skipped:
                _log.info("spool: items not spooled", **skipped)
            g.rows = kept
            return

    def _side_rows(self, origins: list[tuple[int, int, float]], state: Mapping[str, Any],
                   dead: Sequence[DeadInput], now: float) -> None:  # fmt: skip
        """What commits with the batch's rows: MQTT marks, rule state, dead input."""
        store = self.store
        store.log_side(origins, state, now)  # one side row for both (see bridge.store)
        for d in dead:
            store.dead_input(d.key, d.data, d.reason, d.error, now)

    def _reload_counters(self) -> None:
        """After a rollback: the file's figures plus the drops not written yet."""
        self.store.reload_counters()
        for reason, _prio, n, _size in self._unrecorded:
            self.store.drops[reason] += n

    def _unrecord(self, reason: str, prio: int, n: int, size: int) -> None:
        if n > 0:
            self._unrecorded.append((reason, prio, n, size))
            self.store.drops[reason] += n

    def _apply_cap(self, rows: list[Row]) -> list[Row]:
        store = self.store
        incoming: dict[int, int] = defaultdict(int)
        for r in rows:
            incoming[r[0]] += len(r[6]) + len(r[3]) + ROW_OVERHEAD
        cap = int(self.config.max_bytes)
        reason = DropReason.CAP
        if self.full_cap is not None and self.full_cap < cap:
            cap, reason = self.full_cap, DropReason.DISK_FULL
        plan = overflow_plan(store.usage, incoming, cap)
        if plan.empty:
            return rows
        return self._drop(rows, plan.stored, plan.incoming, reason)

    def _drop(self, rows: list[Row], stored: Mapping[int, int], incoming: Mapping[int, int],
              reason: str) -> list[Row]:  # fmt: skip
        store = self.store
        for prio, target in stored.items():
            n, size = store.drop_oldest(prio, target)
            store.count_drop(reason, prio, n, size)
            if n:
                _log.warning("spool: oldest rows dropped", reason=reason, priority=prio, rows=n, bytes=size)
        kept = rows
        for prio, target in incoming.items():
            freed = n = 0
            survivors = []
            for r in kept:
                if r[0] == prio and freed < target:
                    freed += len(r[6]) + len(r[3]) + ROW_OVERHEAD
                    n += 1
                else:
                    survivors.append(r)
            kept = survivors
            store.count_drop(reason, prio, n, freed)
            if n:
                _log.warning("spool: incoming rows dropped", reason=reason, priority=prio, rows=n,
                             bytes=freed)  # fmt: skip
        return kept

    def _give_up(self, rows: list[Row], skipped: Mapping[str, int], exc: sqlite3.Error) -> None:
        """Still full after every remedy: this group's rows are lost, counted (written with the
        next transaction that commits) and logged."""
        by_prio: dict[int, list[int]] = defaultdict(lambda: [0, 0])
        for r in rows:
            by_prio[r[0]][0] += 1
            by_prio[r[0]][1] += len(r[6]) + len(r[3]) + ROW_OVERHEAD
        for prio, (n, size) in by_prio.items():
            self._unrecord(DropReason.DISK_FULL, prio, n, size)
        for reason, count in skipped.items():
            self._unrecord(reason, 2, count, 0)
        _log.error("spool: storage full, group not written", rows=len(rows), error=str(exc))

    def _free_space(self, rows: list[Row], attempt: int) -> list[Row]:
        """SQLite says the disk (or max_page_count) is full: make room by the overflow policy."""
        store = self.store
        if store.release_reserve():
            _log.warning("spool: disk full, reserve file given back", path=str(store.reserve_path))
        store.checkpoint()
        by_prio: dict[int, int] = defaultdict(int)
        for r in rows:
            by_prio[r[0]] += len(r[6]) + len(r[3]) + ROW_OVERHEAD
        incoming = sum(by_prio.values())
        target = max(2 * incoming, store.total_bytes // 10, 64 * 1024) * (attempt + 1)
        _log.warning("spool: storage full, dropping by policy", path=str(store.path), attempt=attempt + 1,
                     stored_bytes=store.total_bytes, incoming_bytes=incoming)  # fmt: skip
        plan = overflow_plan(store.usage, by_prio, max(0, store.total_bytes + incoming - target))
        if plan.stored:
            try:
                store.begin()
                self._drop([], plan.stored, {}, DropReason.DISK_FULL)
                store.save_next_seq()  # when the drop took the newest group, the counter must stay
                store.commit()
            except sqlite3.Error as exc:
                store.rollback()
                self._reload_counters()
                _log.warning("spool: cannot free space yet", error=str(exc))
            store.checkpoint()
        self.full_cap = store.total_bytes
        if attempt < 3 and store.total_bytes:
            return rows
        # little or nothing left to drop on disk: drop from the batch, lowest priority first
        kept: list[Row] = []
        dropped: dict[int, list[int]] = defaultdict(lambda: [0, 0])
        budget = {p: b if attempt >= 8 else b // 2 + 1 for p, b in by_prio.items()}
        lowest = max(by_prio) if by_prio else 0
        for r in rows:
            size = len(r[6]) + len(r[3]) + ROW_OVERHEAD
            d = dropped[r[0]]
            if (r[0] == lowest or attempt >= 8) and d[1] < budget.get(r[0], 0):
                d[0] += 1
                d[1] += size
            else:
                kept.append(r)
        for prio, (n, size) in dropped.items():
            if n:
                self._unrecord(DropReason.DISK_FULL, prio, n, size)
                _log.warning("spool: incoming rows dropped", reason=DropReason.DISK_FULL, priority=prio,
                             rows=n, bytes=size)  # fmt: skip
        return kept

    def _rebase(self, op: Rebase) -> bool:
        """The spool came back from a power cut older than what Kafka has: rows of this run
        that would sit at or below the checkpoint's sequences move above them (in order),
        and so does the counter. Otherwise they would be taken for shipped and never sent.
        True when that committed a transaction."""
        store = self.store
        if store.rebased or store.opened_seq > op.floor:
            # only the first checkpoint after open tells: later ones cover rows of this run
            if not store.rebased:
                store.checkpoint_floor = op.floor
            store.rebased = True
            op.done.set()
            return False
        store.checkpoint_floor = op.floor
        delta = op.floor + 1 - store.opened_seq
        store.begin()
        try:
            op.moved = store.shift_seqs(store.opened_seq, delta)
            store.reload_side()  # side rows of this run moved too
            store.next_seq += delta
            store.save_next_seq(force=True)
            store.commit()
        except BaseException:
            store.rollback()
            raise
        store.committed_seq = store.next_seq
        if store.deferred_sync:  # on disk before anyone ships by the new numbers
            self.sync(force=True)
        else:
            self.durable_seq = store.committed_seq
        _log.warning("spool: it came back older than Kafka's checkpoint (an unsynced power cut?); "
                     "the rows of this run were renumbered above it",
                     checkpoint_seq=op.floor, spool_restarted_at=store.opened_seq,
                     known_shipped_rows_missing_locally=op.floor + 1 - store.opened_seq,
                     rows_renumbered=op.moved)  # fmt: skip
        store.opened_seq += delta
        store.rebased = True
        op.done.set()
        return True

    def _settle(self, s: Settle, now: float) -> None:
        store = self.store
        for d in s.dead:
            if store.dead_letter(d.lane, d.seq, d.reason, d.error, now):
                _log.error("spool: row moved to dead letters", seq=d.seq, reason=d.reason,
                           error=d.error[:300])  # fmt: skip
        for prio, seq in s.delete_upto.items():
            store.delete_upto(prio, seq)

    def _maintain(self, now: float) -> None:
        store = self.store
        self._next_maintenance = now + 1.0
        if store.ensure_reserve():
            _log.info("spool: reserve file made again", path=str(store.reserve_path))
        if self.full_cap is not None:
            wal = int(self.config.wal_autocheckpoint) * store.page_size
            wanted = 2 * int(self.config.reserve_bytes) + wal
            if store.room() > max(wanted, self.full_cap // 10):
                _log.info("spool: room again after a full disk", learned_cap=self.full_cap)
                self.full_cap = None
        if self.disk_full and self.full_cap is None and (
            self.config.reserve_bytes <= 0 or store.reserve_path.exists()
        ):
            self.disk_full = False
        store.fold_side()
        head = store.oldest_spooled_at()  # any lane's: one seek; a lane's scans (see bridge.groups)
        for prio in list(store.prios()) if head is not None and now - head > self.config.ttl else []:
            oldest = store.oldest_spooled_at(prio)
            if oldest is not None and now - oldest > self.config.ttl:
                n, size = store.expire(prio, now, self.config.ttl)
                store.count_drop(DropReason.TTL, prio, n, size)
                if n:
                    _log.warning("spool: rows past TTL dropped", priority=prio, rows=n, bytes=size)

