"""Reading the spool's groups (schema 5): the lanes' records, figures and floors.

Shared by the writer (:class:`bridge.store.Store`), the forwarder's reader, ``/metrics``
and ``edgegw spool status``; plain functions over a connection, no state.

A lane's records are the records of its groups (``groups``, one row per commit and lane,
:mod:`bridge.packing`) above the lane's *floor* (``floors``): every record at or below it
is gone (shipped, dropped by the cap or TTL) even while the rest of its group is still
waiting. A group is deleted whole once the floor reaches its last record, so at most one
group per lane straddles its floor.

``groups`` is keyed by ``first_seq`` alone (schema 5): a commit appends its groups, every
lane's, at the table's right edge, on one page. Its rows of the *side lane*
(:data:`SIDE_LANE`) are not records: they hold what the commit wrote beside them (MQTT
packet ids, rule state; see :mod:`bridge.store`) and no lane reader ever asks for them.
"""

from __future__ import annotations

import sqlite3

from bridge.envelope import RawRow
from bridge.packing import record_sizes, unpack

__all__ = ["SIDE_LANE", "Figures", "floors", "lane_figures", "oldest_spooled_at", "read_lane", "straddling"]

SIDE_LANE = -1
"""``groups.prio`` of a side row (see :mod:`bridge.store`): not a drain lane."""

Figures = tuple[int, int, float]
"""(records, bytes as the overflow policy counts them, oldest spooled_at) of one lane."""


def floors(conn: sqlite3.Connection) -> dict[int, int]:
    return {int(p): int(s) for p, s in conn.execute("SELECT prio, seq FROM floors")}


def straddling(conn: sqlite3.Connection, prio: int, floor: int) -> tuple[int, int, bytes] | None:
    """(first_seq, last_seq, blob) of the group of ``prio`` that holds ``floor`` and later records."""
    row = conn.execute(
        "SELECT first_seq, last_seq, blob FROM groups WHERE prio = ? AND first_seq <= ?"
        " ORDER BY first_seq DESC LIMIT 1",
        (prio, floor),
    ).fetchone()
    if row is None or row[1] <= floor:
        return None
    return int(row[0]), int(row[1]), bytes(row[2])


def lane_figures(conn: sqlite3.Connection) -> dict[int, Figures]:
    """Records, bytes and oldest spooled_at per lane (call inside one read transaction for
    a consistent snapshot)."""
    out: dict[int, Figures] = {}
    for prio, rows, size, first in conn.execute(
        "SELECT prio, sum(n), sum(size), min(spooled_at) FROM groups WHERE prio >= 0 GROUP BY prio"
    ):
        out[int(prio)] = (int(rows), int(size), float(first))
    for prio, floor in floors(conn).items():
        group = straddling(conn, prio, floor)
        if group is None or prio not in out:
            continue
        gone = [size for seq, size in record_sizes(group[0], group[2]) if seq <= floor]
        rows, size, first = out[prio]
        out[prio] = (rows - len(gone), size - sum(gone), first)
    return out


def oldest_spooled_at(conn: sqlite3.Connection, prio: int | None = None) -> float | None:
    """When the oldest group of lane ``prio`` was spooled, or of any lane (None).

    ``groups`` is keyed by ``first_seq`` alone: a lane's first group is found by scanning
    from the table's head, which is long for a lane that got its first record late in a
    long outage (an alert after a day of readings). Any lane's is the head itself: ask
    that first, then a lane's only when it matters (a TTL to apply)."""
    if prio is None:
        sql = "SELECT spooled_at FROM groups WHERE prio >= 0 ORDER BY first_seq LIMIT 1"
        row = conn.execute(sql).fetchone()
    else:
        row = conn.execute(
            "SELECT spooled_at FROM groups WHERE prio = ? ORDER BY first_seq LIMIT 1", (prio,)
        ).fetchone()
    return None if row is None else float(row[0])


_NO_END = 1 << 62
_LANE_SQL = (
    "SELECT first_seq, last_seq, blob, coalesce((SELECT seq FROM floors WHERE prio = ?1), 0)"
    " FROM groups WHERE prio = ?1 AND first_seq >= coalesce("
    "(SELECT max(first_seq) FROM groups WHERE prio = ?1 AND first_seq <= ?2), ?2 + 1)"
    " AND first_seq < ?3 ORDER BY first_seq"
)
"""The lane's groups holding records above ``after``, with the floor: one statement, so
one snapshot of both. Without a group of the lane at or below ``after`` the scan starts
right above it, not at the table's head (other lanes' and side rows lie there)."""


def read_lane(conn: sqlite3.Connection, lane: int, after: int, limit: int,
              upto: int | None = None) -> list[RawRow]:  # fmt: skip
    """Records of ``lane`` with sequence > ``after`` (and above the floor), oldest first;
    with ``upto``, of the groups that begin below it only (a group is one commit's: all of
    it is below a sync's sequence, or none)."""
    out: list[RawRow] = []
    cur = conn.execute(_LANE_SQL, (lane, after, _NO_END if upto is None else upto))
    try:
        for first, last, blob, floor in cur:
            low = max(after, int(floor))
            if last <= low:
                continue
            records = unpack(int(first), bytes(blob))
            if records[0][0] <= low:
                records = [r for r in records if r[0] > low]
            out.extend(records[: limit - len(out)])
            if len(out) >= limit:
                break
    finally:
        cur.close()  # an unfinished statement would hold its WAL snapshot open
    return out
