"""Spool figures: append rate with group commit (synchronous NORMAL and FULL), what a
PUBACK waits at a given rate (submit -> on_durable, per group), disk bytes per event.

    .venv/bin/python -m bench.spool_bench                  # 300k readings, 3 runs each
    .venv/bin/python -m bench.spool_bench --rows 1000000 --runs 5 --dir /var/tmp
    .venv/bin/python -m bench.spool_bench --sd-card 10 --rows 30000 --runs 1   # fsync takes 10 ms

The spool lives in ``--dir`` (a real disk: tmpfs writes are not counted by
/proc/self/io). ``--sd-card MS`` puts it on the power-cut file system of the test bed
(FUSE; simulators/testbed/powercut.py) with every fsync taking MS milliseconds, as on an
SD card (this machine's disk syncs in well under a millisecond): what group commit makes
of a slow fsync. FUSE's own cost (~9 requests per commit) is in those figures too, for
both modes alike; disk bytes are not counted there.

Readings are built before the timed part and submitted in batches of
100, as an MQTT source hands them over per wakeup. Prints medians; nothing is asserted.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

from bridge.config import SpoolConfig
from bridge.envelope import encode_item
from bridge.spool import Spool
from common.logs import configure_logging
from gateway.model import Reading


def _io_write_bytes() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def make_readings(n: int, devices: int = 100) -> list[Reading]:
    now = time.time()
    return [
        Reading(f"sensor-{i % devices:03d}", "temperature", round(18.0 + (i % 97) * 0.1, 2), now + i * 1e-4,
                now + i * 1e-4, "C")
        for i in range(n)
    ]  # fmt: skip


PAGE_SIZE = 1024
"""SQLite page size of the spool files made here (--page-size)."""


def append_run(base: Path, sync: str, items: list[Reading], batch: int) -> tuple[float, float]:
    """Rows per second, disk bytes written per row."""
    path = base / f"spool-{sync}.db"
    for suffix in ("", "-wal", "-shm", "-reserve"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    spool = Spool.open(SpoolConfig(path=path, synchronous=sync, max_bytes=8 << 30, page_size=PAGE_SIZE))
    written = _io_write_bytes()
    started = time.perf_counter()
    for i in range(0, len(items), batch):
        spool.submit(items[i : i + batch])
    spool.flush(timeout=600)
    elapsed = time.perf_counter() - started
    spool.close()
    per_row = (_io_write_bytes() - written) / len(items)
    return len(items) / elapsed, per_row


def paced_run(base: Path, sync: str, rate: int, seconds: float) -> dict[str, float | None]:
    """Submit 10-reading batches at ``rate`` readings/s; what on_durable waits, per group."""
    path = base / f"paced-{sync}-{rate}.db"
    spool = Spool.open(SpoolConfig(path=path, synchronous=sync, page_size=PAGE_SIZE))
    items = make_readings(int(rate * seconds) + 10)
    waits: list[float] = []
    lock = threading.Lock()
    started = time.perf_counter()
    for k, i in enumerate(range(0, len(items) - 10, 10)):
        due = started + k * 10 / rate
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        t0 = time.perf_counter()

        def done(t0: float = t0) -> None:
            with lock:
                waits.append((time.perf_counter() - t0) * 1000)

        spool.submit(items[i : i + 10], done)
    spool.flush()
    stats = spool.stats()
    spool.close()
    waits.sort()
    return {
        "ack_p50_ms": waits[len(waits) // 2],
        "ack_p99_ms": waits[int(len(waits) * 0.99)],
        "commit_p50_ms": stats.commit_ms_p50,
        "commit_p99_ms": stats.commit_ms_p99,
        "rows_per_commit": stats.committed_rows / max(1, stats.commits),
    }


def main() -> None:
    configure_logging(level="warning", json=False)
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--dir", type=Path, default=None, help="where the spool files go (a real disk)")
    parser.add_argument("--sd-card", type=float, default=None, metavar="MS",
                        help="on the power-cut FUSE file system, every fsync taking MS ms")  # fmt: skip
    parser.add_argument("--rates", default="5000,20000", help="paced rates, readings/s (comma-separated)")
    parser.add_argument("--page-size", type=int, default=1024, help="SQLite page size of the spool files")
    args = parser.parse_args()
    global PAGE_SIZE  # noqa: PLW0603 - a benchmark's one setting
    PAGE_SIZE = args.page_size
    base = Path(tempfile.mkdtemp(prefix="edgegw-spool-bench-", dir=args.dir))
    work = base
    mount = None
    if args.sd_card is not None:
        from simulators.testbed import PowerCutFS  # noqa: PLC0415 - only with --sd-card

        mount = PowerCutFS(work / "backing", work / "sd-card", fsync_delay=args.sd_card / 1000)
        mount.mount()
        base = work / "sd-card"
        print(f"on the power-cut file system, every fsync taking {args.sd_card:g} ms (an SD card)")
    try:
        items = make_readings(args.rows)
        payload = statistics.mean(len(encode_item(r)[3]) for r in items[:1000])
        print(f"spool append: {args.rows} readings in batches of {args.batch}, {args.runs} runs, dir {base}, "
              f"page size {PAGE_SIZE}")  # fmt: skip
        print(f"  payload (CloudEvents data JSON): {payload:.0f} bytes per reading")
        for sync in ("normal", "full"):
            runs = [append_run(base, sync, items, args.batch) for _ in range(args.runs)]
            rate = statistics.median(r[0] for r in runs)
            per_row = statistics.median(r[1] for r in runs)
            print(f"  synchronous={sync:<6} {rate:>10,.0f} rows/s   disk {per_row:6.0f} bytes/row "
                  f"({per_row / payload:.2f}x payload)")  # fmt: skip
        print("what a PUBACK waits (submit -> on_durable), 10-reading batches, 3 s each:")
        for sync in ("normal", "full"):
            for rate in (int(r) for r in args.rates.split(",")):
                r = paced_run(base, sync, rate, 3.0)
                print(f"  synchronous={sync:<6} {rate:>6}/s: ack p50 {r['ack_p50_ms']:.2f} ms, "
                      f"p99 {r['ack_p99_ms']:.2f} ms; commit p50 {r['commit_p50_ms']:.2f} ms, "
                      f"p99 {r['commit_p99_ms']:.2f} ms; {r['rows_per_commit']:.0f} rows/commit")  # fmt: skip
    finally:
        if mount is not None:
            mount.unmount()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
