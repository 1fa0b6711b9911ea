"""The spool's SQLite statements, run by the spool's single writer thread.

:class:`Store` holds the write connection and the in-memory usage figures (records and
bytes per priority) that the overflow policy decides on. Every method either runs
inside a transaction the caller opened (``begin``/``commit``) or opens its own.

Records are stored a group at a time (one ``groups`` row per commit and lane, see
:mod:`bridge.packing` and :mod:`bridge.groups`); taking a lane's head (shipped, cap, TTL)
deletes the groups it covers whole and raises the lane's floor when it ends inside a
group. Only a dead letter rewrites a group (without the record Kafka refused).

What commits beside the records (the MQTT packet ids a batch took, the rules' state it
changed) is a *side row* of ``groups`` (lane :data:`~bridge.groups.SIDE_LANE`, one row
per commit, :func:`bridge.packing.pack_side`, with a sequence number of its own) instead
of upserts into ``recent_origins`` and ``rule_state`` there and then: an upsert rewrites the leaf
(and often an overflow page) each key lives on, a handful of 4 KiB pages per commit at
home rates, while the side row lands on the page the commit's groups are appended to.
Side rows are folded into the two tables (:meth:`Store.fold_side`) once there are
:data:`FOLD_ROWS` of them or :data:`FOLD_BYTES` bytes, and at close; reading the tables
(:meth:`Store.load_origins`, :meth:`Store.load_state`) replays what is not folded yet, in
commit order.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import struct
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
import structlog

from bridge.config import SpoolConfig
from bridge.groups import SIDE_LANE, floors, lane_figures
from bridge.lanes import LaneWrites
from bridge.migrations import migrate
from bridge.packing import pack_side, unpack_side
from bridge.policy import Usage
from gateway.errors import SpoolError

__all__ = ["Store", "connect", "is_full"]

_log = structlog.get_logger("edgegw.bridge.spool")

WRITER_CACHE_KIB = 1024
READER_CACHE_KIB = 512
"""SQLite page cache per connection (SQLite's default is 2 MiB). The writer appends at the
end of each lane and deletes at its start, the forwarder and /metrics read in sequence
order: the hot pages are the B-tree's edges. -8000 filled 8 MiB in a 300k drain."""
FOLD_ROWS = 2000
FOLD_BYTES = 2 << 20
"""Side rows are folded into ``recent_origins`` and ``rule_state`` once there are this many
of them, or bytes (at 100 readings/s, ~10 commits/s: every few minutes). A fold rewrites
the pages of every key changed since the last one, once; replaying this many at open
takes milliseconds."""
def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def is_full(exc: sqlite3.Error) -> bool:
    """SQLite's full condition: the disk (ENOSPC) or ``max_page_count``."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code == sqlite3.SQLITE_FULL or "database or disk is full" in str(exc)


def connect(path: Path, *, readonly: bool = False, timeout: float = 10.0) -> sqlite3.Connection:
    """A connection in autocommit mode (explicit BEGIN/COMMIT), optionally read-only."""
    try:
        if readonly:
            conn = sqlite3.connect(
                f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False,
                timeout=timeout,
            )  # fmt: skip
        else:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=timeout)
        if readonly:
            conn.execute(f"PRAGMA cache_size = -{READER_CACHE_KIB}")
    except sqlite3.Error as exc:
        raise SpoolError(f"cannot open spool {path}: {exc}") from exc
    return conn


class Store(LaneWrites):
    """Write side of one spool file (used from one thread at a time)."""

    def __init__(self, config: SpoolConfig) -> None:
        self.config = config
        self.path = config.path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = connect(self.path)
        try:
            self._wal_fd: int | None = None
            self.deferred_sync = False
            """Commits do not fsync the WAL themselves; :meth:`sync_wal` does (see
            :meth:`defer_sync`)."""
            self._pragmas()
            self.sync_wal()  # a killed run's last commits may still sit in the page cache only
            self.old_version = migrate(self.conn)
            meta = dict(self.conn.execute("SELECT key, value FROM meta"))
            self.spool_id: str = meta["spool_id"]
            top = self.conn.execute("SELECT max(last_seq) FROM groups").fetchone()[0] or 0
            dead_top = self.conn.execute("SELECT max(seq) FROM dead_letters").fetchone()[0] or 0
            self.next_seq = max(int(meta["next_seq"]), top + 1, dead_top + 1)
            self.opened_seq = self.next_seq
            self.committed_seq = self.next_seq
            """The next sequence as of the last commit (rows below it are in the file)."""
            """The first sequence of this run (rows at or above it were spooled since open)."""
            self.rebased = False
            self.checkpoint_floor: int | None = None
            """The highest sequence the first Kafka checkpoint after open knew (None: not read yet)."""
            """Set once the first Kafka checkpoint after open was compared with opened_seq."""
            self.usage: dict[int, Usage] = {}
            self.floors = {}
            self.dead_letters = 0
            self.drops: dict[str, int] = defaultdict(int)
            self.reload_counters()
            self.ensure_reserve()
            self._identity = _identity(self.path)
        except (sqlite3.Error, OSError) as exc:
            self.close_wal()
            self.conn.close()
            raise SpoolError(f"cannot open spool {self.path}: {exc}") from exc
        except BaseException:
            self.close_wal()
            self.conn.close()
            raise

    # ------------------------------------------------------------------ the file itself
    def replaced(self) -> bool:
        """True when the path no longer names the file this connection writes to."""
        return _identity(self.path) != self._identity

    def rescue(self) -> Path:
        """Copy the open (deleted) database back to the path with SQLite's backup API; a
        path that holds another file now keeps it, and the copy goes beside it."""
        target = self.path
        if target.exists():
            target = self.path.with_name(f"{self.path.name}.rescued-{int(time.time())}")
        for suffix in ("-wal", "-shm"):
            with contextlib.suppress(OSError):  # the deleted file's companions, if they are left
                if not self.path.exists():
                    Path(f"{self.path}{suffix}").unlink()
        dst = sqlite3.connect(target)
        try:
            self.conn.backup(dst)
        finally:
            dst.close()
        _log.error("spool: file deleted while open; content saved back", path=str(target))
        return target

    # ------------------------------------------------------------------ disk reserve
    @property
    def reserve_path(self) -> Path:
        return Path(f"{self.path}-reserve")

    def ensure_reserve(self) -> bool:
        """Make the ballast file if it is missing and the filesystem has room for it twice over."""
        size = int(self.config.reserve_bytes)
        path = self.reserve_path
        if size <= 0 or path.exists():
            return False
        try:
            st = os.statvfs(path.parent)
            if st.f_bavail * st.f_frsize < 2 * size + int(self.config.wal_autocheckpoint) * self.page_size:
                return False
            with path.open("wb") as f:
                f.write(b"\0" * size)
                f.flush()
                os.fsync(f.fileno())
            _fsync_directory(path.parent)  # its name too: a power cut must not take it back
        except OSError:
            with contextlib.suppress(OSError):
                path.unlink()
            return False
        return True

    def room(self) -> int:
        """Bytes the spool could still grow by: free filesystem space, or free pages under max_page_count."""
        try:
            st = os.statvfs(self.path.parent)
            free = st.f_bavail * st.f_frsize
        except OSError:
            return 0
        if self.config.max_pages is not None:
            pages, freelist = (
                self.conn.execute("PRAGMA page_count").fetchone()[0],
                self.conn.execute("PRAGMA freelist_count").fetchone()[0],
            )
            free = min(free, (int(self.config.max_pages) - int(pages) + int(freelist)) * self.page_size)
        return free

    def release_reserve(self) -> bool:
        try:
            self.reserve_path.unlink()
        except FileNotFoundError:
            return False
        return True

    def reload_counters(self) -> None:
        """Usage, drop and dead-letter figures from the file (at open, after a rollback)."""
        self.usage = {prio: Usage(rows, size) for prio, (rows, size, _) in lane_figures(self.conn).items()}
        self.floors = floors(self.conn)
        self.dead_letters = int(self.conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0])
        self.reload_side()
        drops: dict[str, int] = defaultdict(int)
        for reason, rows in self.conn.execute("SELECT reason, sum(rows) FROM drops GROUP BY reason"):
            drops[reason] = int(rows)
        self.drops = drops

    def _pragmas(self) -> None:
        c = self.config
        conn = self.conn
        if conn.execute("PRAGMA page_count").fetchone()[0] == 0:  # a new file: its page size is ours to set
            conn.execute(f"PRAGMA page_size = {int(c.page_size)}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise SpoolError(f"spool {self.path}: cannot switch to WAL mode (got {mode})")
        conn.execute(f"PRAGMA synchronous = {c.synchronous.upper()}")
        conn.execute(f"PRAGMA wal_autocheckpoint = {int(c.wal_autocheckpoint)}")
        self.page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
        conn.execute(f"PRAGMA journal_size_limit = {int(c.wal_autocheckpoint) * self.page_size}")
        conn.execute("PRAGMA temp_store = MEMORY")
        # Debian builds SQLite with SECURE_DELETE: zeroing every shipped row doubles the disk writes
        conn.execute("PRAGMA secure_delete = OFF")
        conn.execute(f"PRAGMA cache_size = -{WRITER_CACHE_KIB}")
        if c.max_pages is not None:
            conn.execute(f"PRAGMA max_page_count = {int(c.max_pages)}")

    # ------------------------------------------------------------------ durability
    def defer_sync(self) -> None:
        """Commit under ``synchronous=NORMAL`` and make commits durable with
        :meth:`sync_wal`, several at a time (the writer's ``CommitPacer.sync_due``).

        Under ``synchronous=FULL`` every commit fdatasyncs the WAL, and the file system
        writes the 4 KiB page its last frame landed in; the next commit's frames land in
        that page again. At 1k readings/s (commits of 0.1 s) that was 40 of the 138 bytes
        written per reading (``bench.spool_pages``). One fdatasync for a few commits makes
        them durable together; a reader that ships rows (:class:`bridge.spool.SpoolReader`)
        reads only up to the last sync (``durable_seq``). SQLite itself still syncs the WAL
        before a checkpoint and the database after it, and the WAL's header when it starts
        over."""
        self.conn.execute("PRAGMA synchronous = NORMAL")
        self.deferred_sync = True

    def sync_wal(self, *, required: bool = False) -> None:
        """fdatasync the WAL: every commit so far is durable. The descriptor is opened once
        and kept: SQLite writes one WAL file for the life of its connection (a restart
        rewrites it from the start, a size limit truncates it; neither makes a new file),
        and locks the ``-shm`` file and the database, not the WAL. No WAL file yet: nothing
        to sync, unless ``required`` (commits are waiting for this sync), then SpoolError."""
        if self._wal_fd is None:
            try:
                self._wal_fd = os.open(f"{self.path}-wal", os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                if not required:
                    return
                raise SpoolError(f"spool {self.path}: its WAL is gone; commits cannot be synced") from None
        os.fdatasync(self._wal_fd)

    # ------------------------------------------------------------------ transactions
    def begin(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        self.conn.execute("COMMIT")

    def rollback(self) -> None:
        if self.conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):  # SQLite may have rolled back on its own (SQLITE_FULL)
                self.conn.execute("ROLLBACK")

    def checkpoint(self) -> None:
        with contextlib.suppress(sqlite3.Error):  # busy readers: the next checkpoint will do
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()

    @property
    def total_bytes(self) -> int:
        return sum(u.bytes for u in self.usage.values())

    # ------------------------------------------------------------------ writes (inside a transaction)
    side_rows = True
    """Log what a commit writes beside its records as one side row (True), or upsert it
    in place as schema 4 did (False). The spool writer keeps side rows while it commits a
    few dozen times a second at most (``CommitPacer.side_rows``: groups gather, and the
    card's wear is decided per commit); above, commits are many (MQTT 3.1.1's window of
    16 messages at 10k readings/s) and the side rows a few KiB each: deleting them at each
    fold held the writer for 45-65 ms a second at 10k QoS 1 readings/s, and every commit
    waited. Switching to upserts folds the side rows first, so a replay never puts older
    state over newer."""

    def reload_side(self) -> None:
        """What the side rows not folded yet say (at open, after a rollback or a
        renumbering): their sequence numbers, the packet ids they took and the rule state
        they and the table make, the one replay of them; from then on the writer keeps
        these in memory as it logs, so a fold reads nothing back."""
        self.side_seqs: list[int] = []
        self.side_bytes = 0
        self.side_origins: dict[int, tuple[int, float]] = {}
        """Packet id -> (digest, at) taken since the last fold."""
        self.side_keys: set[str] = set()
        """Rule-state keys changed since the last fold."""
        state: dict[str, Any] = {}
        self._table_state(state)
        for seq, blob in self.conn.execute(
            "SELECT first_seq, blob FROM groups WHERE prio = ? ORDER BY first_seq", (SIDE_LANE,)
        ):
            self.side_seqs.append(int(seq))
            self.side_bytes += len(blob)
            try:
                at, taken, doc = unpack_side(bytes(blob))
            except (TypeError, ValueError, struct.error) as exc:  # cannot be torn; never stop on it
                _log.error("spool: side row unreadable, skipped", seq=seq, error=str(exc))
                continue
            for slot, digest in taken:
                self.side_origins[slot] = (digest, at)
            self._replay(state, doc)
            self.side_keys.update(doc.get("s", ()), doc.get("d", ()), doc.get("l", ()))
        self.state_last: dict[str, Any] = state
        """The rule state as committed (what the next side row is a change from)."""

    def log_side(self, origins: Sequence[tuple[int, int, float]] = (),
                 state: Mapping[str, Any] | None = None, now: float = 0.0) -> None:  # fmt: skip
        """One side row: MQTT packet ids taken (``(slot, digest, at)``; one ``at`` is kept,
        the commit's, the last) and rule-state rows (upserts), as one commit made them.

        A state value that is a dict like the key's last one is written as the top-level
        fields that changed (a rule changes a flag or two, and its ``clock``):
        ``{"d": {key: fields}}``; a changed field that is a list the last one's tail
        grew into (a loop guard's fire history: times drop off its head as new ones come)
        as what it dropped and added: ``{"l": {key: {field: [dropped, [added...]]}}}``;
        anything else whole: ``{"s": {key: value}}``."""
        if not origins and not state:
            return
        if not self.side_rows:
            self._upsert(origins, state or {})
            return
        doc: dict[str, dict[str, Any]] = {}
        last = self.state_last
        for key, value in (state or {}).items():
            prev = last.get(key)
            if isinstance(value, dict) and isinstance(prev, dict) and prev.keys() <= value.keys():
                changed = {k: v for k, v in value.items() if k not in prev or prev[k] != v}
                for field in [k for k, v in changed.items() if v.__class__ is list]:
                    step = _list_step(prev.get(field), changed[field])
                    if step is not None:
                        doc.setdefault("l", {}).setdefault(key, {})[field] = step
                        del changed[field]
                if changed:
                    doc.setdefault("d", {})[key] = changed
            else:
                doc.setdefault("s", {})[key] = value
            last[key] = dict(value) if isinstance(value, dict) else value  # a caller may reuse its dict
            self.side_keys.add(key)
        at = origins[-1][2] if origins else now
        for slot, digest, _at in origins:
            self.side_origins[slot] = (digest, at)
        blob = pack_side(at, [(o[0], o[1]) for o in origins], doc)
        seq = self.next_seq
        self.next_seq += 1
        self.conn.execute(
            "INSERT INTO groups(prio, first_seq, last_seq, n, size, spooled_at, blob)"
            " VALUES (?, ?, ?, 0, 0, ?, ?)",
            (SIDE_LANE, seq, seq, now, blob),
        )
        self.side_seqs.append(seq)
        self.side_bytes += len(blob)

    def _upsert(self, origins: Sequence[tuple[int, int, float]], state: Mapping[str, Any]) -> None:
        self.fold_side(force=True)
        last = self.state_last
        for key, value in state.items():
            last[key] = dict(value) if isinstance(value, dict) else value  # a caller may reuse its dict
        self._write_tables(origins, state.keys())

    def _write_tables(self, origins: Iterable[tuple[int, int, float]], keys: Iterable[str]) -> None:
        """Upsert packet ids and the rule state of ``keys`` (as :attr:`state_last` holds it)."""
        self.conn.executemany(
            "INSERT OR REPLACE INTO recent_origins(slot, digest, at) VALUES (?, ?, ?)", origins
        )
        last = self.state_last
        self.conn.executemany(
            "INSERT OR REPLACE INTO rule_state(key, data) VALUES (?, ?)",
            [(key, orjson.dumps(last[key])) for key in keys if key in last],
        )

    def remember(self, origins: Sequence[tuple[int, int, float]]) -> None:
        self.log_side(origins)

    @staticmethod
    def _replay(state: dict[str, Any], doc: Mapping[str, Mapping[str, Any]]) -> None:
        state.update(doc.get("s", {}))
        for key, fields in doc.get("d", {}).items():
            prev = state.get(key)
            state[key] = {**prev, **fields} if isinstance(prev, dict) else dict(fields)
        for key, lists in doc.get("l", {}).items():
            row = state[key] = dict(state.get(key) or {})
            for field, (dropped, added) in lists.items():
                row[field] = list(row.get(field) or ())[dropped:] + added

    def fold_side(self, *, force: bool = False) -> bool:
        """Write what the side rows say into ``recent_origins`` and ``rule_state`` and
        delete them (inside the caller's transaction), when there are enough (or
        ``force``). Each key is written once, with its last value, from memory: a fold
        reads no side row back (replaying a few MiB of them held the writer for 100+ ms
        at 10k QoS 1 readings/s, and every commit waited)."""
        n = len(self.side_seqs)
        if not n or (not force and n < FOLD_ROWS and self.side_bytes < FOLD_BYTES):
            return False
        self._write_tables([(slot, digest, at) for slot, (digest, at) in self.side_origins.items()],
                           sorted(self.side_keys))  # fmt: skip
        self.conn.executemany("DELETE FROM groups WHERE first_seq = ?", [(seq,) for seq in self.side_seqs])
        self.groups_deleted = True
        self.side_seqs = []
        self.side_bytes = 0
        self.side_origins = {}
        self.side_keys = set()
        return True

    def save_next_seq(self, *, force: bool = False) -> None:
        """Store the sequence counter, when this transaction deleted groups (the highest
        sequence in the file may have gone with them) or when forced. Otherwise the file
        says it already: at open the counter is the largest of ``meta``, the groups' last
        sequence and the dead letters' (+1). An append-only commit writes no ``meta`` page."""
        if force or (self.groups_deleted and not self._newest_kept()):
            self.conn.execute("UPDATE meta SET value = ? WHERE key = 'next_seq'", (str(self.next_seq),))
        self.groups_deleted = False

    def _newest_kept(self) -> bool:
        """The file still says the counter: its newest group ends right below it (mostly the
        commit's side row), so a delete at the head needs no ``meta`` page written."""
        row = self.conn.execute("SELECT last_seq FROM groups ORDER BY first_seq DESC LIMIT 1").fetchone()
        return row is not None and int(row[0]) >= self.next_seq - 1

    def count_drop(self, reason: str, prio: int, rows: int, size: int) -> None:
        if rows <= 0:
            return
        self.conn.execute(
            "INSERT INTO drops(reason, prio, rows, bytes) VALUES (?, ?, ?, ?) ON CONFLICT(reason, prio)"
            " DO UPDATE SET rows = rows + excluded.rows, bytes = bytes + excluded.bytes",
            (reason, prio, rows, size),
        )
        self.drops[reason] += rows

    def load_origins(self) -> list[tuple[int, int, float]]:
        """(packet id, digest, when) of the MQTT messages taken last, oldest first: the
        table, then what the side rows not folded yet took."""
        slots = {int(a): (int(b), float(c)) for a, b, c in self.conn.execute(
            "SELECT slot, digest, at FROM recent_origins")}  # fmt: skip
        slots.update(self.side_origins)
        ordered = sorted(slots.items(), key=lambda item: (item[1][1], item[0]))
        return [(slot, digest, at) for slot, (digest, at) in ordered]

    def save_state(self, entries: Mapping[str, Any]) -> None:
        """Upsert rule-state rows (inside the caller's transaction; logged, see the module docstring)."""
        self.log_side(state=entries)

    def _table_state(self, out: dict[str, Any]) -> None:
        for key, data in self.conn.execute("SELECT key, data FROM rule_state"):
            try:
                out[str(key)] = orjson.loads(data)
            except orjson.JSONDecodeError:
                continue  # a torn row cannot be (SQLite's transactions); skip rather than stop

    def load_state(self) -> dict[str, Any]:
        """The rule-state rows as committed: the table, then the side rows not folded yet."""
        return {key: dict(v) if isinstance(v, dict) else v for key, v in self.state_last.items()}

    def dead_input(self, key: str, data: bytes, reason: str, error: str, now: float) -> None:
        """An input message no one could process, kept with its topic and payload."""
        seq = self.next_seq
        self.next_seq += 1
        self.conn.execute(
            "INSERT INTO dead_letters(seq, kind, key, ts, spooled_at, data, reason, error, failed_at)"
            " VALUES (?, 'input', ?, ?, ?, ?, ?, ?, ?)",
            (seq, key, now, now, bytes(data), reason, error[:2000], now),
        )
        self.dead_letters += 1

    def prios(self) -> Iterable[int]:
        return sorted(p for p, u in self.usage.items() if u.rows > 0)

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):  # closing anyway: the next open replays the side rows
            if self.side_seqs:
                self.begin()
                try:
                    self.fold_side(force=True)
                    self.save_next_seq()
                    self.commit()
                except sqlite3.Error:
                    self.rollback()
                    raise
        with contextlib.suppress(sqlite3.Error, OSError):  # closing anyway
            if self.deferred_sync:
                self.sync_wal()
            self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        self.conn.close()
        self.close_wal()

    def close_wal(self) -> None:
        """Close the WAL descriptor of :meth:`sync_wal` (the connection is closed, or failed)."""
        if self._wal_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._wal_fd)
            self._wal_fd = None


def _list_step(old: Any, new: list[Any]) -> list[Any] | None:
    """``[dropped, added]`` when ``new`` is ``old`` without its first ``dropped`` items and
    with ``added`` after it (and that is shorter than ``new`` itself), else None."""
    if old.__class__ is not list or not old:
        return None
    try:
        dropped = old.index(new[0]) if new else len(old)
    except ValueError:
        dropped = len(old)
    kept = len(old) - dropped
    if kept * 2 < len(new) or old[dropped:] != new[:kept]:
        return None
    return [dropped, new[kept:]]
