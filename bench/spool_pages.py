"""Which pages a running gateway writes, commit by commit (issue 16: SD-card wear).

    .venv/bin/python -m bench.spool_pages [--rates 100,1000] [--seconds 10] [--idle 10]
    .venv/bin/python -m bench.spool_pages --spool commit_max_delay=1.0
    .venv/bin/python -m bench.spool_pages --rates 100 --seconds 150 --mqtt protocol=5 --kafka

Starts the test bed of ``bench.home_rates`` (Mosquitto, Kafka; 100 sensors, a rule each,
QoS 1, spool only) and ``python -m gateway run`` of this checkout, attaches
``strace -f`` to it (file writes, fsyncs, truncates; the first bytes of each write), and
for each phase (idle, then each rate) sorts every byte the process wrote to a file:

- to the spool's ``-wal``: frames (24-byte header + page), by the page's B-tree (from
  SQLite's ``dbstat`` of the file at the end of the phase: ``groups`` leaf or interior,
  ``recent_origins``, ``rule_state``, freelist, page 1, ...), and per commit (a frame
  whose header carries the database size ends a transaction);
- to the database file (checkpoints copying pages back), to ``-shm``, and anything else
  (logs, other files), by path.

Prints a table per phase: bytes per reading by destination (and ``write_bytes`` of
``/proc/<pid>/io``, what reached the block layer in 4 KiB pages), WAL frames per commit
by B-tree, checkpoints. ``--kafka`` turns the exactly-once uplink on (its process is
traced too); ``--mqtt protocol=5`` lets a commit hold a second of QoS 1 readings.
``EDGEGW_PAGES_KEEP=PATH`` keeps a copy of the spool file as each phase ended (to read
its side rows and groups afterwards). strace slows the process; the bytes are what they are, the rates
are not. Nothing is asserted; the machine is shared (figures indicative).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from bench import peers, proctree
from bench.brokers import start_brokers
from bench.e2e_bench import Gateway, make_layout
from bench.home_rates import Target, Variant, _mqtt_settings, _value, config_for, paced
from bench.machine import ROOT

_LINE = re.compile(
    r'^(\d+)\s+(\d+\.\d+)\s+(\w+)\((\d+)<([^>]*)>'  # pid, time, call, fd<path>
    r'(?:, (?:"((?:[^"\\]|\\.)*)"(\.\.\.)?, )?(\d+)?)?'  # the data and the size; fsync has neither
)
_RET = re.compile(r"= (-?\d+)")


@dataclass
class Write:
    at: float
    call: str
    path: str
    head: bytes
    size: int
    offset: int | None


@dataclass
class Phase:
    name: str
    start: float
    end: float
    readings: float = 0.0
    write_bytes: int = 0
    """``/proc/<pid>/io`` write_bytes of the tree (what reaches the block layer)."""
    writes: list[Write] = field(default_factory=list)
    syncs: Counter[str] = field(default_factory=Counter)


def _unescape(s: str) -> bytes:
    return bytes(s, "latin-1").decode("unicode_escape").encode("latin-1")


def parse(trace: Path) -> tuple[list[Write], list[tuple[float, str, str]]]:
    writes: list[Write] = []
    other: list[tuple[float, str, str]] = []
    for line in trace.read_text(errors="replace").splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        _pid, at, call, _fd, path, data, _more, _n = m.groups()
        ret = _RET.search(line.rsplit(")", 1)[-1] if ")" in line else line)
        if call in ("write", "pwrite64", "pwritev", "writev"):
            if ret is None or int(ret.group(1)) <= 0:
                continue
            offset = None
            if call == "pwrite64":
                tail = line.rsplit(", ", 1)[-1]
                with contextlib.suppress(ValueError):
                    offset = int(tail.split(")")[0])
            writes.append(Write(float(at), call, path, _unescape(data or ""), int(ret.group(1)), offset))
        elif call in ("fsync", "fdatasync", "ftruncate"):
            other.append((float(at), call, path))
    return writes, other


def _tree(pid: int) -> list[int]:
    """``pid`` and its children (the uplink process), to trace them all."""
    kids = Path(f"/proc/{pid}/task/{pid}/children")
    return [pid, *(int(k) for k in kids.read_text().split())] if kids.exists() else [pid]


def page_map(db: Path) -> dict[int, str]:
    """Page number -> B-tree (name, and interior/leaf/overflow) of a copy of the file."""
    out: dict[int, str] = {1: "page 1 (header, sqlite_schema)"}
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "copy.db"
        src = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        dst = sqlite3.connect(copy)
        src.backup(dst)
        src.close()
        if os.environ.get("EDGEGW_PAGES_KEEP"):
            shutil.copy(copy, os.environ["EDGEGW_PAGES_KEEP"])
        for name, pageno, pagetype in dst.execute("SELECT name, pageno, pagetype FROM dbstat"):
            if int(pageno) != 1:
                out[int(pageno)] = f"{name} {pagetype}"
        rows = dst.execute(
            "SELECT prio, count(*), avg(length(blob)), sum(n) FROM groups GROUP BY prio"
        ).fetchall()
        out[0] = "; ".join(f"lane {p}: {c} rows, {b:.0f} B a blob, {n} records" for p, c, b, n in rows)
        count = dst.execute("PRAGMA page_count").fetchone()[0]
        trunk = dst.execute("PRAGMA freelist_count").fetchone()[0]
        dst.close()
    for p in range(2, int(count) + 1):
        out.setdefault(p, "freelist" if trunk else "free")
    return out


def analyse(phase: Phase, db: str, pages: dict[int, str], page_size: int) -> str:
    by_dest: Counter[str] = Counter()
    frames: Counter[str] = Counter()
    per_commit: list[Counter[str]] = []
    current: Counter[str] = Counter()
    ckpt_pages: Counter[str] = Counter()
    for w in phase.writes:
        if w.path == f"{db}-wal":
            by_dest["wal"] += w.size
            if w.size == 24 and len(w.head) >= 8:
                pgno = int.from_bytes(w.head[0:4], "big")
                commit = int.from_bytes(w.head[4:8], "big")
                tree = pages.get(pgno, f"page {pgno} (new since)")
                frames[tree] += 1
                current[tree] += 1
                if commit:
                    per_commit.append(current)
                    current = Counter()
        elif w.path == db:
            by_dest["db (checkpoint)"] += w.size
            if w.offset is not None:
                ckpt_pages[pages.get(w.offset // page_size + 1, "new")] += 1
        elif w.path == f"{db}-shm":
            by_dest["shm"] += w.size
        else:
            by_dest[w.path] += w.size
    n = phase.readings or 1
    lines = [f"### {phase.name}: {phase.readings:.0f} readings in {phase.end - phase.start:.1f} s, "
             f"{len(per_commit)} commits"]  # fmt: skip
    total = sum(by_dest.values())
    lines.append(f"write() bytes: {total:,} ({total / n:,.0f} per reading); /proc io write_bytes "
                 f"{phase.write_bytes:,} ({phase.write_bytes / n:,.0f} per reading)")  # fmt: skip
    for dest, b in by_dest.most_common():
        lines.append(f"  {dest:<40} {b:>12,} B  {b / n:>10,.1f} B/reading")
    if per_commit:
        lines.append(f"WAL frames per commit, mean {sum(frames.values()) / len(per_commit):.2f}, by B-tree:")
        for tree, k in frames.most_common():
            lines.append(f"  {tree:<40} {k / len(per_commit):>6.2f} per commit  ({k} frames)")
        lines.append(f"  readings per commit: {phase.readings / len(per_commit):.1f}")
    if ckpt_pages:
        lines.append(f"checkpoint pages copied to the db: {sum(ckpt_pages.values())}")
        for tree, k in ckpt_pages.most_common(8):
            lines.append(f"  {tree:<40} {k}")
    lines.append(f"fsync/fdatasync/ftruncate: {dict(phase.syncs)}")
    lines.append(f"groups in the file at the end: {pages.get(0, '')}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--idle", type=float, default=10.0)
    parser.add_argument("--rates", default="100,1000")
    parser.add_argument("--spool", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--mqtt", action="append", default=[], metavar="KEY=VALUE",
                        help="an mqtt setting of the gateway (e.g. protocol=5)")  # fmt: skip
    parser.add_argument("--kafka", action="store_true",
                        help="exactly-once Kafka uplink on (its process is traced too)")  # fmt: skip
    parser.add_argument("--gateway-root", type=Path, default=ROOT)
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args()
    if shutil.which("strace") is None:
        raise SystemExit("strace is needed")
    spool = {k: _value(v) for k, _, v in (s.partition("=") for s in args.spool)}
    variant = Variant("trace", args.gateway_root.resolve(), args.python, spool, {}, _mqtt_settings(args.mqtt))
    layout, devices = make_layout(100, 100)
    with tempfile.TemporaryDirectory(prefix="edgegw-pages-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        broker, node = start_brokers(stack, work, max_inflight_messages=1000)
        bed = peers.Bed(work, broker, node, layout, devices, None)
        # the rules keep their ``else``: a command on every crossing, as this trace always had
        shape = argparse.Namespace(log_level="info", otherwise=True)
        config, http_port = config_for(bed, "trace", "kafka" if args.kafka else "spool", variant, shape)
        db = str((work / "state-trace" / "spool.db").resolve())
        gw = Gateway(config, variant.root, http_port, root=variant.root, python=variant.python)
        stack.callback(gw.stop)
        gw.wait_ready()
        target = Target(gw.pid, gw.stop, lambda: gw.proc.poll() is None, lambda: "\n".join(gw.tail), gw)
        time.sleep(3.0)
        trace = work / "strace.txt"
        st = subprocess.Popen(
            ["strace", "-f", "-ttt", "-y", "-s", "24", "-x", "-o", str(trace),
             *(a for pid in _tree(gw.pid) for a in ("-p", str(pid))),
             "-e", "trace=write,pwrite64,writev,pwritev,fsync,fdatasync,ftruncate"],
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(1.0)
        phases: list[Phase] = []
        maps: list[dict[int, str]] = []
        t0, wb = time.time(), proctree.write_bytes(gw.pid)
        time.sleep(args.idle)
        phases.append(Phase("idle", t0, time.time(), write_bytes=proctree.write_bytes(gw.pid) - wb))
        maps.append(page_map(Path(db)))
        for rate in [int(r) for r in args.rates.split(",") if r]:
            t0, wb = time.time(), proctree.write_bytes(gw.pid)
            got = paced(target, broker.port, layout, rate, args.seconds, every=True)
            phases.append(Phase(f"{rate}/s", t0, time.time(), readings=got.readings,
                                write_bytes=proctree.write_bytes(gw.pid) - wb))  # fmt: skip
            maps.append(page_map(Path(db)))
        st.terminate()
        st.wait(10)
        writes, other = parse(trace)
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        for p in phases:
            p.writes = [w for w in writes if p.start <= w.at < p.end]
            for at, call, path in other:
                if p.start <= at < p.end:
                    p.syncs[f"{call} {Path(path).name}"] += 1
        sizes: dict[str, Counter[int]] = defaultdict(Counter)
        for w in writes:
            sizes[w.path][w.size] += 1
        print(f"spool {db}, page_size {page_size}, settings {spool or 'default'}")
        for p, pages in zip(phases, maps, strict=True):
            print(analyse(p, db, pages, page_size))
            print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
