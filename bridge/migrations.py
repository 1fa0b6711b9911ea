"""The spool's on-disk schema and its migrations (``PRAGMA user_version``).

- Version 1 (edgegw 0.0.x development builds): one ``spool`` table, kinds as text,
  payload as text. Kept here as :data:`SCHEMA_V1` so tests can build such a file.
- Version 2: rows clustered by ``(prio, seq)`` so each drain lane is read in order
  without a second index; dead letters; drop counters; recent MQTT digests; meta.
- Version 3: ``rule_state``, the rules' state committed with the readings that
  changed it; ``recent_origins`` keyed by MQTT packet id (``slot`` is the packet id; the
  version 2 rows, keyed by a ring position, are cleared: see gateway/ledger.py). Kept
  here as :data:`SCHEMA_V3` (the whole layout) so tests can build such a file.
- Version 4: the compact spool. ``rows`` (one row per event) becomes ``groups``
  (one row per commit and lane, the records packed by :mod:`bridge.packing`) and
  ``floors`` (per lane, the sequence at or below which records are gone; see
  :mod:`bridge.groups`). The migration packs each lane's rows of one commit (same
  ``spooled_at``) into groups; sequences, kinds, keys, times and data are kept as they were.
- Version 5 (current): one B-tree per commit's writes (SD-card wear, docs/bridge.md).
  ``groups`` is keyed by ``first_seq`` alone (a rowid table; ``prio`` is a column), so the
  groups of every lane of a commit are appended side by side at the table's right edge
  instead of in the middle of the tree, one place per lane; and what commits beside the
  records (MQTT packet ids taken, rule state) is a row of the same table, in the *side
  lane* (``prio`` -1, :data:`bridge.groups.SIDE_LANE`), folded into ``recent_origins`` and
  ``rule_state`` now and then (:mod:`bridge.store`). The migration copies the groups.

A newer edgegw migrates an older file in place, in one transaction, at open. A row it
does not understand (a kind it does not know) is never discarded: it moves to the
dead-letter table with its original kind and data, listed by ``edgegw spool status``.
A file written by a *newer* edgegw is refused untouched.
"""

from __future__ import annotations

import sqlite3
import time
import uuid

import structlog

from bridge.packing import MAX_GROUP, pack
from bridge.policy import KIND_NAMES, PRIORITY_OF_KIND, Kind
from gateway.errors import SpoolError

__all__ = ["SCHEMA_V1", "SCHEMA_V3", "SCHEMA_V4", "SCHEMA_VERSION", "migrate"]

SCHEMA_VERSION = 5

_log = structlog.get_logger("edgegw.bridge.spool")

SCHEMA_V1 = """
CREATE TABLE spool (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    kind    TEXT NOT NULL,
    device  TEXT NOT NULL,
    ts      REAL NOT NULL,
    created REAL NOT NULL,
    payload TEXT NOT NULL
);
PRAGMA user_version = 1;
"""

_SCHEMA_V2 = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rows (
    prio       INTEGER NOT NULL,
    seq        INTEGER NOT NULL,
    kind       INTEGER NOT NULL,
    key        TEXT NOT NULL,
    ts         REAL NOT NULL,
    spooled_at REAL NOT NULL,
    data       BLOB NOT NULL,
    PRIMARY KEY (prio, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dead_letters (
    seq        INTEGER PRIMARY KEY,
    kind       TEXT NOT NULL,
    key        TEXT NOT NULL,
    ts         REAL,
    spooled_at REAL,
    data       BLOB NOT NULL,
    reason     TEXT NOT NULL,
    error      TEXT NOT NULL,
    failed_at  REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS drops (
    reason TEXT NOT NULL,
    prio   INTEGER NOT NULL,
    rows   INTEGER NOT NULL,
    bytes  INTEGER NOT NULL,
    PRIMARY KEY (reason, prio)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS recent_origins (
    slot   INTEGER PRIMARY KEY,
    digest INTEGER NOT NULL,
    at     REAL NOT NULL
);
"""

_SCHEMA_V3 = """
CREATE TABLE IF NOT EXISTS rule_state (
    key  TEXT PRIMARY KEY,
    data BLOB NOT NULL
) WITHOUT ROWID;
"""

_SCHEMA_V4 = """
CREATE TABLE IF NOT EXISTS groups (
    prio       INTEGER NOT NULL,
    first_seq  INTEGER NOT NULL,
    last_seq   INTEGER NOT NULL,
    n          INTEGER NOT NULL,
    size       INTEGER NOT NULL,
    spooled_at REAL NOT NULL,
    blob       BLOB NOT NULL,
    PRIMARY KEY (prio, first_seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS floors (
    prio INTEGER PRIMARY KEY,
    seq  INTEGER NOT NULL
);
"""

_SCHEMA_V5 = """
CREATE TABLE IF NOT EXISTS groups5 (
    first_seq  INTEGER PRIMARY KEY,
    prio       INTEGER NOT NULL,
    last_seq   INTEGER NOT NULL,
    n          INTEGER NOT NULL,
    size       INTEGER NOT NULL,
    spooled_at REAL NOT NULL,
    blob       BLOB NOT NULL
);
"""

SCHEMA_V3 = _SCHEMA_V2 + _SCHEMA_V3 + "PRAGMA user_version = 3;\n"
"""The whole version 3 layout (tests build such files; ``meta`` needs spool_id and next_seq)."""
SCHEMA_V4 = _SCHEMA_V2 + _SCHEMA_V3 + _SCHEMA_V4 + "DROP TABLE rows;\nPRAGMA user_version = 4;\n"
"""The whole version 4 layout (tests build such files; ``meta`` needs spool_id and next_seq)."""

_V1_KINDS: dict[str, Kind] = {name: Kind(code) for code, name in KIND_NAMES.items()}


def _init_meta(conn: sqlite3.Connection, next_seq: int) -> None:
    conn.executemany(
        "INSERT OR IGNORE INTO meta(key, value) VALUES (?, ?)",
        [
            ("spool_id", uuid.uuid4().hex[:12]),
            ("created_at", repr(time.time())),
            ("next_seq", str(next_seq)),
        ],
    )


def _script(conn: sqlite3.Connection, script: str) -> None:
    """Run DDL statement by statement (``executescript`` would commit the open transaction)."""
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)


def _create(conn: sqlite3.Connection) -> None:
    _script(conn, _SCHEMA_V2)
    _script(conn, _SCHEMA_V3)
    _script(conn, _SCHEMA_V4)
    conn.execute("DROP TABLE rows")
    _v4_to_v5(conn, log=False)
    _init_meta(conn, 1)


def _v1_to_v2(conn: sqlite3.Connection) -> None:
    _script(conn, _SCHEMA_V2)
    kept = moved = 0
    now = time.time()
    for seq, kind_name, device, ts, created, payload in conn.execute(
        "SELECT seq, kind, device, ts, created, payload FROM spool ORDER BY seq"
    ):
        data = payload.encode() if isinstance(payload, str) else bytes(payload)
        kind = _V1_KINDS.get(kind_name)
        if kind is None:
            conn.execute(
                "INSERT INTO dead_letters(seq, kind, key, ts, spooled_at, data, reason, error, failed_at)"
                " VALUES (?, ?, ?, ?, ?, ?, 'unknown_kind', ?, ?)",
                (seq, str(kind_name), device, ts, created, data,
                 f"schema 1 row of kind {kind_name!r}, unknown to this edgegw", now),
            )  # fmt: skip
            moved += 1
            continue
        conn.execute(
            "INSERT INTO rows(prio, seq, kind, key, ts, spooled_at, data) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (int(PRIORITY_OF_KIND[kind]), seq, int(kind), device, ts, created, data),
        )
        kept += 1
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'spool'").fetchone()
    top = conn.execute("SELECT max(seq) FROM spool").fetchone()[0] or 0
    next_seq = max(top, row[0] if row else 0) + 1
    conn.execute("DROP TABLE spool")
    _init_meta(conn, next_seq)
    _log.info("spool migrated", from_version=1, to_version=2, rows=kept, dead_lettered=moved)


def _v2_to_v3(conn: sqlite3.Connection) -> None:
    _script(conn, _SCHEMA_V3)
    cleared = conn.execute("DELETE FROM recent_origins").rowcount
    _log.info("spool migrated", from_version=2, to_version=3, redelivery_digests_cleared=cleared)


def _flush(conn: sqlite3.Connection, prio: int, spooled_at: float,
           run: list[tuple[int, int, str, float, bytes]]) -> None:  # fmt: skip
    first, last, n, size, blob = pack(*zip(*run, strict=True))
    conn.execute(
        "INSERT INTO groups(prio, first_seq, last_seq, n, size, spooled_at, blob)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (prio, first, last, n, size, spooled_at, blob),
    )


def _v3_to_v4(conn: sqlite3.Connection) -> None:
    """Pack each lane's rows of one commit (one ``spooled_at``) into groups; a row whose kind
    does not fit a group (not a small integer) moves to the dead letters, never dropped."""
    _script(conn, _SCHEMA_V4)
    kept = moved = groups = 0
    now = time.time()
    run: list[tuple[int, int, str, float, bytes]] = []
    at = (0, 0.0)
    cur = conn.execute("SELECT prio, seq, kind, key, ts, spooled_at, data FROM rows ORDER BY prio, seq")
    for prio, seq, kind, key, ts, spooled_at, data in iter(cur.fetchone, None):
        raw = data.encode() if isinstance(data, str) else bytes(data)
        if not isinstance(kind, int) or not 0 <= kind < 256:
            conn.execute(
                "INSERT INTO dead_letters(seq, kind, key, ts, spooled_at, data, reason, error, failed_at)"
                " VALUES (?, ?, ?, ?, ?, ?, 'unknown_kind', ?, ?)",
                (seq, str(kind), str(key), ts, spooled_at, raw,
                 f"schema 3 row of kind {kind!r}, unknown to this edgegw", now),
            )  # fmt: skip
            moved += 1
            continue
        if run and (at != (prio, spooled_at) or len(run) >= MAX_GROUP):
            _flush(conn, at[0], at[1], run)
            groups += 1
            run = []
        at = (prio, spooled_at)
        run.append((seq, kind, str(key), float(ts), raw))
        kept += 1
    if run:
        _flush(conn, at[0], at[1], run)
        groups += 1
    conn.execute("DROP TABLE rows")
    _log.info("spool migrated", from_version=3, to_version=4, rows=kept, groups=groups, dead_lettered=moved)


def _v4_to_v5(conn: sqlite3.Connection, *, log: bool = True) -> None:
    """``groups`` keyed by ``first_seq`` alone (a record's sequence is unique across lanes)."""
    _script(conn, _SCHEMA_V5)
    moved = conn.execute(
        "INSERT INTO groups5(first_seq, prio, last_seq, n, size, spooled_at, blob)"
        " SELECT first_seq, prio, last_seq, n, size, spooled_at, blob FROM groups ORDER BY first_seq"
    ).rowcount
    conn.execute("DROP TABLE groups")
    conn.execute("ALTER TABLE groups5 RENAME TO groups")
    if log:
        _log.info("spool migrated", from_version=4, to_version=5, groups=moved)


_STEPS = {1: _v1_to_v2, 2: _v2_to_v3, 3: _v3_to_v4, 4: _v4_to_v5}


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the open database to :data:`SCHEMA_VERSION` in one transaction; returns the old version.

    ``conn`` must be in autocommit mode (``isolation_level=None``).
    """
    old = version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version == SCHEMA_VERSION:
        return version
    if version > SCHEMA_VERSION:
        raise SpoolError(
            f"spool schema version {version} was written by a newer edgegw; "
            f"this one reads up to version {SCHEMA_VERSION}. Upgrade edgegw (the file is untouched)."
        )
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    conn.execute("BEGIN IMMEDIATE")
    try:
        if version == 0 and not tables - {"sqlite_sequence"}:
            _create(conn)
        elif version == 0:
            raise SpoolError("the file is an SQLite database but not an edgegw spool (no schema version)")
        else:
            while version < SCHEMA_VERSION:
                _STEPS[version](conn)
                version += 1
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return old
