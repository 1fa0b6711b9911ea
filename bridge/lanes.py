"""The spool's lanes on disk: groups of records written, taken from the head, renumbered.

Part of :class:`bridge.store.Store` (writer thread only), kept apart from the file's own
affairs (pragmas, reserve, rescue). One ``groups`` row per commit and lane
(:mod:`bridge.packing`); taking a lane's head (shipped, cap, TTL) deletes the groups it
covers whole and, when it ends inside a group, raises the lane's floor instead of
rewriting it (:mod:`bridge.groups`). Only a dead letter rewrites a group, without the
record Kafka refused. The in-memory figures (``usage``) follow every change.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from bridge.groups import floors, oldest_spooled_at
from bridge.packing import MAX_GROUP, pack, record_sizes, unpack
from bridge.policy import KIND_NAMES, Usage, expired_prefix, row_size

__all__ = ["LaneWrites"]

_INSERT_SQL = (
    "INSERT INTO groups(prio, first_seq, last_seq, n, size, spooled_at, blob) VALUES (?, ?, ?, ?, ?, ?, ?)"
)


class LaneWrites:
    """The group statements of :class:`bridge.store.Store` (inside the caller's transaction)."""

    conn: sqlite3.Connection
    usage: dict[int, Usage]
    floors: dict[int, int]
    """Per lane, the sequence at or below which every record is gone (see bridge.groups)."""
    dead_letters: int
    groups_deleted: bool = False
    """Set when a statement deleted groups since the counter was last stored (see save_next_seq)."""

    def _account(self, prio: int, rows: int, size: int) -> None:
        u = self.usage.get(prio, Usage())
        self.usage[prio] = Usage(u.rows + rows, u.bytes + size)

    def insert(self, rows: Sequence[list[Any]]) -> None:
        """Rows are ``[prio, seq, kind, key, ts, spooled_at, data]`` in sequence order: one
        group per lane (split above MAX_GROUP records)."""
        lanes: dict[int, list[list[Any]]] = {}
        for r in rows:
            lane = lanes.get(r[0])
            if lane is None:
                lanes[r[0]] = lane = []
            lane.append(r)
        out = []
        for prio, lane in lanes.items():
            for i in range(0, len(lane), MAX_GROUP):
                _, seqs, kinds, keys, ts, spooled, datas = zip(*lane[i : i + MAX_GROUP], strict=True)
                first, last, n, size, blob = pack(seqs, kinds, keys, ts, datas)
                out.append((prio, first, last, n, size, spooled[0], blob))
                self._account(prio, n, size)
        self.conn.executemany(_INSERT_SQL, out)

    def shift_seqs(self, start: int, delta: int) -> int:
        """Add ``delta`` to the sequence of every record at or above ``start`` (order kept;
        no group straddles ``start``, the first sequence of a run); returns how many moved.
        In two steps: the primary key must never collide."""
        cur = self.conn.execute("SELECT coalesce(sum(n), 0) FROM groups WHERE first_seq >= ?", (start,))
        moved = int(cur.fetchone()[0])
        self.conn.execute("UPDATE groups SET first_seq = -(first_seq + ?), last_seq = last_seq + ?"
                          " WHERE first_seq >= ?", (delta, delta, start))  # fmt: skip
        self.conn.execute("UPDATE groups SET first_seq = -first_seq WHERE first_seq < 0")
        self.conn.execute("UPDATE floors SET seq = seq + ? WHERE seq >= ?", (delta, start))
        self.floors = floors(self.conn)
        return moved

    def _blob(self, prio: int, first: int) -> bytes:
        row = self.conn.execute("SELECT blob FROM groups WHERE prio = ? AND first_seq = ?", (prio, first))
        return bytes(row.fetchone()[0])

    def delete_upto(self, prio: int, seq: int) -> tuple[int, int]:
        """Take the records of ``prio`` with sequence <= ``seq``; returns (records, bytes).
        Groups it covers are deleted whole; one it ends inside stays, under the lane's floor."""
        floor = self.floors.get(prio, 0)
        if seq <= floor:
            return 0, 0
        rows = size = 0
        straddles = False
        for first, last, n, group_size in self.conn.execute(
            "SELECT first_seq, last_seq, n, size FROM groups WHERE prio = ? AND first_seq <= ?"
            " ORDER BY first_seq",
            (prio, seq),
        ).fetchall():
            if first > floor and last <= seq:
                rows += n
                size += group_size
                continue
            gone = [sz for s, sz in record_sizes(first, self._blob(prio, first)) if floor < s <= seq]
            rows += len(gone)
            size += sum(gone)
            straddles = straddles or last > seq
        deleted = self.conn.execute(
            "DELETE FROM groups WHERE prio = ? AND first_seq <= ? AND last_seq <= ?", (prio, seq, seq)
        )
        self.groups_deleted = self.groups_deleted or deleted.rowcount > 0
        if straddles:
            self.conn.execute("INSERT OR REPLACE INTO floors(prio, seq) VALUES (?, ?)", (prio, seq))
            self.floors[prio] = seq
        # else: nothing at or below seq is left; a floor row from earlier masks nothing
        if rows:
            self._account(prio, -rows, -size)
        return rows, size

    def drop_oldest(self, prio: int, target: int) -> tuple[int, int]:
        """Take the oldest records of ``prio`` until at least ``target`` bytes are freed."""
        floor = self.floors.get(prio, 0)
        freed = 0
        last: int | None = None
        cur = self.conn.execute(
            "SELECT first_seq, last_seq, size FROM groups WHERE prio = ? ORDER BY first_seq", (prio,)
        )
        try:
            groups = iter(cur.fetchmany, [])
            for chunk in groups:
                for first, group_last, group_size in chunk:
                    if first > floor and freed + group_size < target:
                        freed += group_size
                        last = group_last
                        continue
                    for s, sz in record_sizes(first, self._blob(prio, first)):
                        if s > floor:
                            freed += sz
                            last = s
                            if freed >= target:
                                break
                    if freed >= target:
                        break
                if freed >= target:
                    break
        finally:
            cur.close()
        return self.delete_upto(prio, last) if last is not None else (0, 0)

    def expire(self, prio: int, now: float, ttl: float) -> tuple[int, int]:
        """Take the leading groups of ``prio`` spooled more than ``ttl`` seconds ago (a group's
        records share one spooled_at: the commit's)."""
        cur = self.conn.execute(
            "SELECT last_seq, spooled_at FROM groups WHERE prio = ? ORDER BY first_seq", (prio,)
        )
        try:
            last = expired_prefix(cur, now, ttl)
        finally:
            cur.close()
        return (0, 0) if last is None else self.delete_upto(prio, last)

    def oldest_spooled_at(self, prio: int | None = None) -> float | None:
        return oldest_spooled_at(self.conn, prio)

    def dead_letter(self, prio: int, seq: int, reason: str, error: str, now: float) -> bool:
        """Move one record to the dead-letter table (its group is rewritten without it and
        without what lies under the floor); False if it is gone already."""
        floor = self.floors.get(prio, 0)
        row = self.conn.execute(
            "SELECT first_seq, last_seq, spooled_at, blob FROM groups WHERE prio = ? AND first_seq <= ?"
            " ORDER BY first_seq DESC LIMIT 1",
            (prio, seq),
        ).fetchone()
        if seq <= floor or row is None or row[1] < seq:
            return False
        first, spooled_at = int(row[0]), float(row[2])
        records = unpack(first, bytes(row[3]))
        found = [r for r in records if r[0] == seq]
        if not found:
            return False
        _, kind, key, ts, data = found[0]
        cur = self.conn.execute(
            "INSERT OR IGNORE INTO dead_letters(seq, kind, key, ts, spooled_at, data, reason, error,"
            " failed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (seq, KIND_NAMES.get(kind, str(kind)), key, ts, spooled_at, data, reason, error[:2000], now),
        )
        if cur.rowcount <= 0:
            return False
        self.conn.execute("DELETE FROM groups WHERE prio = ? AND first_seq = ?", (prio, first))
        self.groups_deleted = True
        keep = [r for r in records if r[0] != seq and r[0] > floor]
        if keep:
            first, last, n, size, blob = pack(*zip(*keep, strict=True))
            self.conn.execute(_INSERT_SQL, (prio, first, last, n, size, spooled_at, blob))
        self._account(prio, -1, -row_size(len(data), len(key)))
        self.dead_letters += 1
        return True

