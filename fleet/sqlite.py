"""The embedded store: one SQLite file (WAL, ``synchronous=NORMAL``), one writer.

Tuned for the consumer's batches: one ``BEGIN IMMEDIATE ... COMMIT`` per batch, every
table written with ``executemany`` of one cached statement. ``synchronous=NORMAL`` in WAL
mode survives a killed process (a power cut can lose the last commits, which the
consumer then reads again from Kafka: the offsets are in the same lost transaction).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from fleet.errors import FleetStoreError, StaleOffsetsError
from fleet.model import Changes
from fleet.sql import INDEXES, TABLES, Writer, dialect
from fleet.store import STATE_QUERIES, OffsetMoves, StoredState, state_from_rows

__all__ = ["SqliteReader", "SqliteStore"]

_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA temp_store=MEMORY",
    "PRAGMA cache_size=-65536",  # 64 MiB of page cache: the upserts' indexes stay in memory
    "PRAGMA busy_timeout=10000",
)


def _connect(path: str, *, readonly: bool = False) -> sqlite3.Connection:
    try:
        if readonly:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None,
                                   check_same_thread=False, cached_statements=64)  # fmt: skip
            conn.execute("PRAGMA busy_timeout=10000")
        else:
            # one writer thread at a time, but not always the one that opened it (the demo)
            conn = sqlite3.connect(path, isolation_level=None, cached_statements=64, check_same_thread=False)
            for pragma in _PRAGMAS:
                conn.execute(pragma)
    except sqlite3.Error as exc:
        raise FleetStoreError(f"cannot open the fleet view {path}: {exc}") from exc
    return conn


class SqliteReader:
    def __init__(self, path: str) -> None:
        self._conn = _connect(path, readonly=True)
        self._conn.row_factory = sqlite3.Row
        self._lock = threading.Lock()

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self._lock:
            try:
                return [dict(r) for r in self._conn.execute(sql, params)]
            except sqlite3.Error as exc:
                raise FleetStoreError(f"query failed: {exc}") from exc

    def close(self) -> None:
        self._conn.close()


class SqliteStore:
    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self.url = f"sqlite://{self.path}"
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._conn = _connect(self.path)
        self._writer = Writer(dialect("?"))
        self._create()

    def _create(self) -> None:
        try:
            for name, columns in TABLES.items():
                self._conn.execute(f"CREATE TABLE IF NOT EXISTS {name} ({columns})")
            for index in INDEXES:
                self._conn.execute(index)
        except sqlite3.Error as exc:
            raise FleetStoreError(f"cannot create the tables of {self.path}: {exc}") from exc

    def load(self) -> StoredState:
        try:
            rows = [self._conn.execute(q).fetchall() for q in STATE_QUERIES]
        except sqlite3.Error as exc:
            raise FleetStoreError(f"cannot read {self.path}: {exc}") from exc
        return state_from_rows(*rows)

    def _many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self._conn.executemany(sql, rows)

    def _one(self, sql: str, params: Sequence[Any]) -> int:
        return self._conn.execute(sql, params).rowcount

    def commit(self, changes: Changes, offsets: OffsetMoves) -> None:
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                self._writer.write(self._many, self._one, changes, offsets)
            except (StaleOffsetsError, sqlite3.Error):
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise FleetStoreError(f"cannot write the fleet view {self.path}: {exc}") from exc

    def prune(self, before: float) -> int:
        day = _day(before)
        try:
            with self._conn:
                n = self._conn.execute("DELETE FROM rollups WHERE hour < ?", (int(before),)).rowcount
                n += self._conn.execute("DELETE FROM rule_days WHERE day < ?", (day,)).rowcount
        except sqlite3.Error as exc:
            raise FleetStoreError(f"cannot prune {self.path}: {exc}") from exc
        return n

    def is_empty(self) -> bool:
        return not any(self._conn.execute(f"SELECT 1 FROM {t} LIMIT 1").fetchone() for t in TABLES)  # noqa: S608

    def reset(self) -> None:
        for name in TABLES:
            self._conn.execute(f"DROP TABLE IF EXISTS {name}")
        self._create()

    def reader(self) -> SqliteReader:
        return SqliteReader(self.path)

    def close(self) -> None:
        self._conn.close()


def _day(ts: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ts))
