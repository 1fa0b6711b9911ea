"""What the power-cut file system costs SQLite: ``python -m simulators.testbed.powercut_bench``.

Runs the same loop (WAL mode, one transaction of ``--rows`` rows of 200 bytes per commit)
on a local disk directory, on tmpfs (``/dev/shm``) and on a :class:`PowerCutFS` mount whose
backing directory is on the local disk, and prints commits per second. A figure to read,
not to assert: it depends on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from simulators.testbed.powercut import PowerCutFS, fuse_problem


def commits_per_second(db: Path, *, synchronous: str, commits: int, rows: int) -> float:
    con = sqlite3.connect(db, isolation_level=None)
    try:
        con.execute("PRAGMA journal_mode=WAL")
        con.execute(f"PRAGMA synchronous={synchronous}")
        con.execute("CREATE TABLE IF NOT EXISTS spool(seq INTEGER PRIMARY KEY, payload BLOB NOT NULL)")
        batch = [(b"x" * 200,)] * rows
        start = time.perf_counter()
        for _ in range(commits):
            con.execute("BEGIN")
            con.executemany("INSERT INTO spool(payload) VALUES (?)", batch)
            con.execute("COMMIT")
        return commits / (time.perf_counter() - start)
    finally:
        con.close()


@contextmanager
def _places(base: Path) -> Iterator[list[tuple[str, Path]]]:
    local = base / "local"
    local.mkdir()
    places = [("local disk", local)]
    shm = Path("/dev/shm")  # noqa: S108  (a private mkdtemp inside it, removed at the end)
    shm_dir = Path(tempfile.mkdtemp(prefix="edgegw-powercut-bench-", dir=shm)) if shm.is_dir() else None
    if shm_dir is not None:
        places.append(("tmpfs (/dev/shm)", shm_dir))
    try:
        if fuse_problem() is None:
            with PowerCutFS(base / "backing", base / "mnt") as fs:
                places.append(("power-cut FUSE (backing on local disk)", fs.mountpoint))
                yield places
        else:
            print(f"power-cut mount skipped: {fuse_problem()}", file=sys.stderr)
            yield places
    finally:
        if shm_dir is not None:
            for path in shm_dir.iterdir():
                path.unlink()
            shm_dir.rmdir()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--commits", type=int, default=2000)
    parser.add_argument("--rows", type=int, default=10, help="rows per transaction (group commit)")
    parser.add_argument("--dir", type=Path, default=None, help="local directory to work in (default: /tmp)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="edgegw-powercut-bench-", dir=args.dir) as tmp, _places(
        Path(tmp)
    ) as places:
        print(f"SQLite {sqlite3.sqlite_version}, WAL, {args.commits} commits of {args.rows} rows")
        for synchronous in ("FULL", "NORMAL"):
            for name, where in places:
                db = where / f"bench-{synchronous.lower()}.db"
                rate = commits_per_second(db, synchronous=synchronous, commits=args.commits, rows=args.rows)
                print(f"  synchronous={synchronous:<6} {name:<40} {rate:>8.0f} commits/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
