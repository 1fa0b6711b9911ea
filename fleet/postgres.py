"""The shared store: PostgreSQL, for several ``fleet serve`` instances in one consumer group.

The same tables and statements as SQLite (:mod:`fleet.sql`). Each instance writes only
the partitions it was assigned; the offsets' compare-and-set in the batch's transaction
fences an instance that lost a partition while it was still writing (its transaction
rolls back and it seeks again). psycopg 3 sends an ``executemany`` in pipeline mode: one
round trip for a whole table's rows.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
from psycopg.rows import dict_row

from fleet.errors import FleetStoreError, StaleOffsetsError
from fleet.model import Changes
from fleet.sql import INDEXES, TABLES, Writer, dialect
from fleet.store import STATE_QUERIES, OffsetMoves, StoredState, state_from_rows

__all__ = ["PostgresReader", "PostgresStore"]

_DDL_LOCK = 0x6564_6765  # pg_advisory_xact_lock key: one instance creates the tables at a time


def _connect(url: str) -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(url, connect_timeout=10)
    except psycopg.Error as exc:
        raise FleetStoreError(f"cannot connect to the fleet view's PostgreSQL: {exc}") from exc


class PostgresReader:
    def __init__(self, url: str) -> None:
        self._conn = _connect(url)
        self._conn.autocommit = True
        self._lock = threading.Lock()

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self._lock:
            try:
                with self._conn.cursor(row_factory=dict_row) as cur:
                    cur.execute(sql.replace("?", "%s"), params)
                    return cur.fetchall()
            except psycopg.Error as exc:
                raise FleetStoreError(f"query failed: {exc}") from exc

    def close(self) -> None:
        self._conn.close()


class PostgresStore:
    def __init__(self, url: str) -> None:
        self.url = url
        self._conn = _connect(url)
        self._writer = Writer(dialect("%s"))
        self._create()

    def _create(self) -> None:
        try:
            with self._conn.transaction():
                self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (_DDL_LOCK,))
                for name, columns in TABLES.items():
                    self._conn.execute(f"CREATE TABLE IF NOT EXISTS {name} ({columns})")
                for index in INDEXES:
                    self._conn.execute(index)
        except psycopg.Error as exc:
            raise FleetStoreError(f"cannot create the fleet view's tables: {exc}") from exc

    def load(self) -> StoredState:
        try:
            with self._conn.transaction():
                rows = [self._conn.execute(q).fetchall() for q in STATE_QUERIES]
        except psycopg.Error as exc:
            raise FleetStoreError(f"cannot read the fleet view: {exc}") from exc
        return state_from_rows(*rows)

    def commit(self, changes: Changes, offsets: OffsetMoves) -> None:
        cur = self._conn.cursor()

        def many(sql: str, rows: Iterable[Sequence[Any]]) -> None:
            cur.executemany(sql, rows)

        def one(sql: str, params: Sequence[Any]) -> int:
            cur.execute(sql, params)
            return cur.rowcount

        try:
            with self._conn.transaction():
                self._writer.write(many, one, changes, offsets)
        except psycopg.errors.UniqueViolation as exc:  # another instance inserted the first offset
            raise StaleOffsetsError(f"another instance wrote a first offset: {exc}") from exc
        except psycopg.Error as exc:
            raise FleetStoreError(f"cannot write the fleet view: {exc}") from exc
        finally:
            cur.close()

    def prune(self, before: float) -> int:
        day = time.strftime("%Y-%m-%d", time.gmtime(before))
        try:
            with self._conn.transaction():
                n = self._conn.execute("DELETE FROM rollups WHERE hour < %s", (int(before),)).rowcount
                n += self._conn.execute("DELETE FROM rule_days WHERE day < %s", (day,)).rowcount
        except psycopg.Error as exc:
            raise FleetStoreError(f"cannot prune the fleet view: {exc}") from exc
        return n

    def is_empty(self) -> bool:
        with self._conn.transaction():
            return not any(
                self._conn.execute(f"SELECT 1 FROM {t} LIMIT 1").fetchone()  # noqa: S608 - table names are constants
                for t in TABLES
            )

    def reset(self) -> None:
        with self._conn.transaction():
            for name in TABLES:
                self._conn.execute(f"DROP TABLE IF EXISTS {name}")
        self._create()

    def reader(self) -> PostgresReader:
        return PostgresReader(self.url)

    def close(self) -> None:
        self._conn.close()
