"""The spool before and after the compact layout, in one run: disk bytes written per event
(append, then read and delete everything as the forwarder does), group-commit append rate
with synchronous NORMAL and FULL, the forwarder side's read + delete rate, and SQLite alone.

    .venv/bin/python -m bench.spool_bytes                       # 200k readings, 5 rounds
    .venv/bin/python -m bench.spool_bytes --rows 500000 --rounds 7 --before bc2e4d7

"before" is the spool of ``--before`` (a git revision, default: the merge base with
main), extracted with ``git archive`` and imported in a subprocess of its own; "after" is
this tree, with zlib on (as shipped) and off (the layout alone: ``bridge.packing.COMPRESS``).
"SQLite alone": plain ``executemany`` of 500-row batches, one transaction each, into a bare
``(seq INTEGER PRIMARY KEY, data BLOB)`` table in WAL mode, then deleted 5,000 at a time.

Every measurement runs in a fresh process, so its disk bytes are that process's
``write_bytes`` in ``/proc/self/io``: bytes it made dirty in the page cache on their way to
the block device (WAL, database file, checkpoints, deletes; a page dirtied twice before
writeback is counted once, as the disk sees it). The files live in ``--dir`` (a real disk:
tmpfs writes are not counted). Readings are built before the clock starts: 100 devices,
four metrics, values with noise (less compressible than a constant); submitted in batches
of 100, as an MQTT source hands them over. The drain reads 5,000 records per round, lane by
lane, and settles each round (deleting what it read), as the forwarder does without Kafka.

Rounds alternate the variants so a load spike on this shared 2-core machine hits them
alike; medians are printed with the load average. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parents[1]
_METRICS = (("temperature", "C", 21.0, 3.0), ("humidity", "%", 45.0, 8.0), ("power", "W", 300.0, 120.0),
            ("co2", "ppm", 600.0, 150.0))  # fmt: skip


def _io_write_bytes() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def _readings(n: int) -> list[Any]:
    from gateway.model import Reading  # noqa: PLC0415 - from the tree under test

    rnd = random.Random(16)
    now = time.time()
    out = []
    for i in range(n):
        metric, unit, mean, sd = _METRICS[i % 4]
        ts = now + i * 1e-3 + rnd.random() * 1e-4
        value = round(rnd.gauss(mean, sd), 2)
        out.append(Reading(f"sensor-{i % 100:03d}", metric, value, ts, ts + 0.004, unit))
    return out


def _figures(payload: float, rows: int, t: tuple[float, float, float],
             w: tuple[int, int, int]) -> dict[str, float]:  # fmt: skip
    return {"payload": payload, "append_rate": rows / (t[1] - t[0]), "drain_rate": rows / (t[2] - t[1]),
            "append_bytes": (w[1] - w[0]) / rows, "drain_bytes": (w[2] - w[1]) / rows,
            "total_bytes": (w[2] - w[0]) / rows}  # fmt: skip


def _spool_worker(path: Path, sync: str, rows: int, compress: bool, rate: float = 0.0) -> dict[str, float]:
    from bridge.config import SpoolConfig  # noqa: PLC0415 - from the tree under test
    from bridge.envelope import encode_item  # noqa: PLC0415
    from bridge.spool import Spool  # noqa: PLC0415

    if not compress:
        from bridge import packing  # noqa: PLC0415 - only the compact spool has it

        packing.COMPRESS = False
    items = _readings(rows)
    payload = sum(len(encode_item(r)[3]) for r in items)
    spool = Spool.open(SpoolConfig(path=path, synchronous=sync, max_bytes=8 << 30))
    w0 = _io_write_bytes()
    t0 = time.perf_counter()
    step = 10 if rate else 100  # paced: 10-reading submits, as at home rates
    for i in range(0, rows, step):
        if rate:
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        spool.submit(items[i : i + step])
    spool.flush(timeout=600)
    t1 = time.perf_counter()
    w1 = _io_write_bytes()
    reader = spool.reader()
    cursors: dict[int, int] = {}
    read = 0
    while True:
        room, upto = 5000, {}
        for lane in (0, 1, 2):
            got = reader.fetch_raw(lane, cursors.get(lane, 0), room)
            if got:
                upto[lane] = got[-1][0]
                room -= len(got)
                read += len(got)
        if not upto:
            break
        cursors.update(upto)
        spool.settle(delete_upto=upto)
    spool.flush(timeout=600)
    t2 = time.perf_counter()
    reader.close()
    spool.close()
    w2 = _io_write_bytes()
    if read != rows:
        raise SystemExit(f"read {read} of {rows} rows: a benchmark of a spool that lost rows is void")
    return _figures(payload / rows, rows, (t0, t1, t2), (w0, w1, w2))


def _sqlite_worker(path: Path, sync: str, rows: int) -> dict[str, float]:
    import sqlite3  # noqa: PLC0415

    from bridge.envelope import encode_item  # noqa: PLC0415

    datas = [(i + 1, encode_item(r)[3]) for i, r in enumerate(_readings(rows))]
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {sync}")
    conn.execute("PRAGMA secure_delete = OFF")
    conn.execute("CREATE TABLE t (seq INTEGER PRIMARY KEY, data BLOB NOT NULL)")
    w0 = _io_write_bytes()
    t0 = time.perf_counter()
    for i in range(0, rows, 500):
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO t(seq, data) VALUES (?, ?)", datas[i : i + 500])
        conn.execute("COMMIT")
    t1 = time.perf_counter()
    w1 = _io_write_bytes()
    for i in range(0, rows, 5000):
        conn.execute("SELECT seq, data FROM t WHERE seq > ? ORDER BY seq LIMIT 5000", (i,)).fetchall()
        conn.execute("DELETE FROM t WHERE seq <= ?", (i + 5000,))
    t2 = time.perf_counter()
    conn.close()
    w2 = _io_write_bytes()
    return _figures(sum(len(d) for _, d in datas) / rows, rows, (t0, t1, t2), (w0, w1, w2))


def _worker(args: argparse.Namespace) -> None:
    from common.logs import configure_logging  # noqa: PLC0415

    configure_logging(level="warning", json=False)
    path = Path(args.dir) / f"{args.worker}-{args.sync}-{os.getpid()}.db"
    try:
        if args.worker == "sqlite":
            out = _sqlite_worker(path, args.sync, args.rows)
        else:
            compress = args.worker != "after-raw"
            out = _spool_worker(path, args.sync, args.rows, compress=compress, rate=args.rate)
    finally:
        for suffix in ("", "-wal", "-shm", "-reserve"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    print(json.dumps(out))


VARIANTS = {"before": "the spool of --before (schema 3: a row per event)",
            "after": "the compact spool (schema 4: a group per commit and lane, zlib)",
            "after-raw": "the compact spool, zlib off (the layout alone)",
            "sqlite": "SQLite alone (500-row executemany, bare table)"}  # fmt: skip


def _run(tree: Path, variant: str, sync: str, rows: int, work: Path, rate: float = 0.0) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", variant, "--sync", sync,
           "--rows", str(rows), "--dir", str(work), "--rate", str(rate)]  # fmt: skip
    done = subprocess.run(cmd, env=env, cwd=tree, capture_output=True, text=True, timeout=1800, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{variant} {sync} failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--before", default=None,
                        help="git revision of the spool before (default: merge base with main)")  # fmt: skip
    parser.add_argument("--dir", default=None, help="where the spool files go (a real disk)")
    parser.add_argument("--worker", choices=list(VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--sync", default="normal", help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--paced", type=int, default=1000,
                        help="also a paced run at this many readings/s for 5 s (0: none)")  # fmt: skip
    args = parser.parse_args()
    if args.worker:
        _worker(args)
        return
    rev = args.before or subprocess.run(["git", "merge-base", "HEAD", "main"], cwd=_ROOT, capture_output=True,
                                        text=True, check=True).stdout.strip()  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="edgegw-spool-bytes-", dir=args.dir))
    old = work / "before-tree"
    old.mkdir()
    archive = subprocess.run(["git", "archive", rev], cwd=_ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
    load0 = os.getloadavg()
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    try:
        for _ in range(args.rounds):
            for sync in ("normal", "full"):
                for variant in VARIANTS:
                    tree = old if variant == "before" else _ROOT
                    results.setdefault((variant, sync), []).append(_run(tree, variant, sync, args.rows, work))
        for _ in range(min(3, args.rounds) if args.paced else 0):
            for variant in ("before", "after", "after-raw"):
                tree = old if variant == "before" else _ROOT
                got = _run(tree, variant, "normal", args.paced * 5, work, rate=args.paced)
                results.setdefault((variant, "paced"), []).append(got)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load1 = os.getloadavg()
    _print(args, rev, results, load0, load1)


def _print(args: argparse.Namespace, rev: str, results: dict[tuple[str, str], list[dict[str, float]]],
           load0: tuple[float, float, float], load1: tuple[float, float, float]) -> None:  # fmt: skip
    def med(variant: str, sync: str, key: str) -> float:
        return statistics.median(r[key] for r in results[(variant, sync)])

    payload = med("after", "normal", "payload")
    print(f"spool bytes and rates: {args.rows:,} readings, {args.rounds} rounds (medians), "
          f"before = {rev[:12]}")  # fmt: skip
    print(f"  payload (CloudEvents data JSON): {payload:.0f} bytes per reading; "
          f"load average {load0[0]:.2f} at the start, {load1[0]:.2f} at the end "
          f"({os.cpu_count()} cores)")  # fmt: skip
    for name, text in VARIANTS.items():
        print(f"  {name:<10} {text}")
    print("  disk bytes written per event (/proc/self/io write_bytes), x payload:")
    print(f"  {'':<10} {'sync':<7} {'append':>14} {'read+delete':>14} {'total':>14}")
    for sync in ("normal", "full"):
        for v in VARIANTS:
            a, d, t = (med(v, sync, k) for k in ("append_bytes", "drain_bytes", "total_bytes"))
            print(f"  {v:<10} {sync:<7} {a:>7.0f} {a / payload:>5.2f}x {d:>7.0f} {d / payload:>5.2f}x "
                  f"{t:>7.0f} {t / payload:>5.2f}x")  # fmt: skip
    print("  events per second (group commit of 100-reading submits; SQLite alone: 500-row executemany):")
    print(f"  {'':<10} {'sync':<7} {'append':>10} {'vs SQLite':>10} {'read+delete':>12}")
    for sync in ("normal", "full"):
        bare = med("sqlite", sync, "append_rate")
        for v in VARIANTS:
            a, d = med(v, sync, "append_rate"), med(v, sync, "drain_rate")
            print(f"  {v:<10} {sync:<7} {a:>10,.0f} {a / bare:>9.2f}x {d:>12,.0f}")
    if ("after", "paced") in results:
        print(f"  disk bytes per event at {args.paced:,} readings/s for 5 s (10-reading submits, normal), "
              "append / read+delete / total:")  # fmt: skip
        for v in ("before", "after", "after-raw"):
            a, d, t = (med(v, "paced", k) for k in ("append_bytes", "drain_bytes", "total_bytes"))
            print(f"  {v:<10} {a:>7.0f} / {d:>5.0f} / {t:>7.0f} bytes  ({t / payload:.2f}x payload)")


if __name__ == "__main__":
    main()
