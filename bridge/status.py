"""``edgegw spool status``: what a spool file holds, read on a read-only connection.

Works while the gateway runs (WAL readers never block the writer, nor it them) and from
the file alone: no config, no Kafka.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge.groups import lane_figures
from bridge.migrations import SCHEMA_VERSION
from bridge.policy import Priority
from bridge.store import connect
from gateway.errors import SpoolError

__all__ = ["SpoolStatus", "format_status", "read_status"]

PRIORITY_NAMES = {int(p): p.name.lower() + "s" for p in Priority}


@dataclass(frozen=True, slots=True)
class SpoolStatus:
    path: str
    schema_version: int
    spool_id: str
    file_bytes: int
    depth: int
    bytes: int
    oldest_age: float | None
    by_priority: dict[str, dict[str, Any]]
    dropped: dict[str, int]
    dead_letters: int
    dead_letter_list: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


def read_status(path: Path, *, now: float | None = None, dead_letter_limit: int = 20) -> SpoolStatus:
    if not path.exists():
        raise SpoolError(f"no spool at {path}")
    now = time.time() if now is None else now
    conn = connect(path, readonly=True)
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version != SCHEMA_VERSION:
            raise SpoolError(
                f"{path}: spool schema version {version}; this edgegw reads version {SCHEMA_VERSION} "
                "(the gateway migrates it at start)"
            )
        conn.execute("BEGIN")  # one snapshot for every figure
        meta = dict(conn.execute("SELECT key, value FROM meta"))
        by_priority: dict[str, dict[str, Any]] = {}
        oldest: float | None = None
        for prio, (rows, size, first) in sorted(lane_figures(conn).items()):
            by_priority[PRIORITY_NAMES.get(prio, f"lane-{prio}")] = {
                "rows": rows,
                "bytes": size,
                "oldest_age_s": round(now - first, 3),
            }
            oldest = first if oldest is None else min(oldest, first)
        dropped = {r: int(n) for r, n in conn.execute("SELECT reason, sum(rows) FROM drops GROUP BY reason")}
        dead = int(conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0])
        dead_list = [
            {"seq": s, "kind": k, "key": key, "reason": r, "error": e, "failed_at": f, "bytes": n}
            for s, k, key, r, e, f, n in conn.execute(
                "SELECT seq, kind, key, reason, error, failed_at, length(data) FROM dead_letters"
                " ORDER BY seq DESC LIMIT ?",
                (dead_letter_limit,),
            )
        ]
        conn.execute("COMMIT")
    except (sqlite3.Error, ValueError) as exc:  # ValueError: a group this edgegw cannot unpack
        raise SpoolError(f"cannot read spool {path}: {exc}") from exc
    finally:
        conn.close()
    return SpoolStatus(
        path=str(path),
        schema_version=version,
        spool_id=meta.get("spool_id", "?"),
        file_bytes=sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists()),
        depth=sum(v["rows"] for v in by_priority.values()),
        bytes=sum(v["bytes"] for v in by_priority.values()),
        oldest_age=None if oldest is None else max(0.0, now - oldest),
        by_priority=by_priority,
        dropped=dropped,
        dead_letters=dead,
        dead_letter_list=dead_list,
    )


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def format_status(s: SpoolStatus) -> str:
    lines = [
        f"spool        {s.path}",
        f"schema       {s.schema_version} (spool id {s.spool_id})",
        f"depth        {s.depth} rows",
        f"bytes        {s.bytes} (file {s.file_bytes} with WAL)",
        f"oldest age   {_age(s.oldest_age)}",
        "by priority:",
    ]
    for name in [*PRIORITY_NAMES.values(), *sorted(set(s.by_priority) - set(PRIORITY_NAMES.values()))]:
        v = s.by_priority.get(name, {"rows": 0, "bytes": 0, "oldest_age_s": None})
        lines.append(
            f"  {name:<10} {v['rows']:>10} rows {v['bytes']:>12} bytes  oldest {_age(v['oldest_age_s'])}"
        )
    dropped = ", ".join(f"{k}={v}" for k, v in sorted(s.dropped.items())) or "none"
    lines.append(f"dropped      {dropped}")
    lines.append(f"dead letters {s.dead_letters}")
    lines.extend(
        f"  #{d['seq']} {d['kind']} key={d['key']} {d['bytes']} bytes: {d['reason']}: {d['error'][:160]}"
        for d in s.dead_letter_list
    )
    return "\n".join(lines)
