"""What the consumer needs of a read-model database, and what the API reads from it.

Two implementations: :class:`fleet.sqlite.SqliteStore` (one instance, a file: the
embedded default) and :class:`fleet.postgres.PostgresStore` (several instances share one
view). The consumer's whole contract is :meth:`Store.commit`: a batch's view changes and
its offsets in one transaction, or nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from fleet.model import Changes, GatewaySeen

__all__ = ["OffsetMoves", "Reader", "Store", "StoredState", "open_store"]

OffsetMoves = Mapping[tuple[str, int], tuple[int | None, int]]
"""(topic, partition) -> (the next offset as loaded, or None; the next offset after the batch)"""


@dataclass(slots=True)
class StoredState:
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    high_water: dict[tuple[str, str, str], int] = field(default_factory=dict)
    seen_ids: list[str] = field(default_factory=list)
    gateways: dict[str, GatewaySeen] = field(default_factory=dict)


class Reader(Protocol):
    """Read-only queries (one per HTTP request thread)."""

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """``sql`` written with ``?`` placeholders."""
        ...

    def close(self) -> None: ...


class Store(Protocol):
    url: str

    def load(self) -> StoredState: ...

    def commit(self, changes: Changes, offsets: OffsetMoves) -> None:
        """Changes and offsets in one transaction; :class:`StaleOffsetsError` rolls back both."""
        ...

    def prune(self, before: float) -> int:
        """Drop rollups and daily fire counts older than ``before``; the rows dropped."""
        ...

    def is_empty(self) -> bool: ...

    def reset(self) -> None:
        """Drop every table (``rebuild --replace``)."""
        ...

    def reader(self) -> Reader: ...

    def close(self) -> None: ...


def state_from_rows(
    offsets: Iterable[Sequence[Any]], high_water: Iterable[Sequence[Any]],
    seen: Iterable[Sequence[Any]], gateways: Iterable[Sequence[Any]],
) -> StoredState:  # fmt: skip
    return StoredState(
        offsets={(t, int(p)): int(n) for t, p, n in offsets},
        high_water={(p, t, k): int(s) for p, t, k, s in high_water},
        seen_ids=[i for (i,) in seen],
        gateways={gw: GatewaySeen(float(hb), bool(on), t or "", int(p if p is not None else -1))
                  for gw, hb, on, t, p in gateways if hb is not None},
    )


STATE_QUERIES = (
    "SELECT topic, part, next_offset FROM offsets",
    "SELECT prefix, topic, msg_key, seq FROM high_water",
    "SELECT ce_id FROM seen_ids",
    "SELECT gateway_id, last_heartbeat, online, hb_topic, hb_partition FROM gateways",
)


def open_store(url: str) -> Store:
    """``sqlite:///path/fleet.db`` (or a plain path) or ``postgresql://...``."""
    if url.startswith(("postgresql://", "postgres://")):
        from fleet.postgres import PostgresStore  # noqa: PLC0415 - psycopg only where PostgreSQL is used

        return PostgresStore(url)
    from fleet.sqlite import SqliteStore  # noqa: PLC0415

    path = url.removeprefix("sqlite://") if url.startswith("sqlite://") else url
    return SqliteStore(path)


