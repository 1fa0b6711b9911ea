"""How long `edgegw run` takes to start after a power cut with a large spool.

    .venv/bin/python -m bench.start_after_cut [--rows 1000000] [--synchronous full|normal] [--runs 3]

A child process fills a spool with ``--rows`` readings (group commit, as the gateway
writes them), keeps writing, and is SIGKILLed in the middle of a group: the file is left
with a WAL that was never checkpointed, as after a cut (a SIGKILL leaves the same bytes
on disk as a power cut under ``synchronous=full``; under ``normal`` a real cut can also
drop the last commits, which only makes the WAL shorter). Then, each run on a fresh copy
of that file:

- ``Spool.open``: WAL recovery, migrations, the usage figures (a count over every row);
- the resume point (the rules' state and the redelivery check, from the spool);
- ``edgegw run`` from spawn to its ``ready`` log line, against a test-bed Mosquitto.

Prints medians; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bridge.config import SpoolConfig
from bridge.spool import Spool
from common.logs import configure_logging
from simulators.testbed import Mosquitto

ROOT = Path(__file__).resolve().parents[1]

_FILL = """
import os, sys, time
from bridge.config import SpoolConfig
from bridge.spool import Spool
from gateway.model import Reading
path, rows, sync = sys.argv[1], int(sys.argv[2]), sys.argv[3]
spool = Spool.open(SpoolConfig(path=path, synchronous=sync, max_bytes=8 << 30))
now = time.time()
batch = 2000
for start in range(0, rows, batch):
    spool.append_many([Reading(f"sensor-{i % 1000:04d}", "temperature", 20.0 + (i % 97) * 0.1, now, now, "C")
                       for i in range(start, start + batch)])
print("filled", flush=True)
i = rows
while True:  # keep writing until killed, mid-group
    spool.submit([Reading(f"sensor-{i % 1000:04d}", "temperature", 21.0, now, now, "C")])
    i += 1
    if i % 500 == 0:
        time.sleep(0.001)
"""


def fill_and_cut(path: Path, rows: int, sync: str) -> float:
    """Seconds the fill took; the child is killed mid-write afterwards."""
    began = time.monotonic()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-c", _FILL, str(path), str(rows), sync],
                             stdout=subprocess.PIPE, text=True, env=env)  # fmt: skip
    assert child.stdout is not None
    for line in child.stdout:  # log lines may come first
        if line.strip() == "filled":
            break
    else:
        raise SystemExit(f"the fill failed (exit {child.wait()})")
    took = time.monotonic() - began
    time.sleep(0.5)
    child.send_signal(signal.SIGKILL)
    child.wait()
    return took


def copy_spool(src: Path, dst_dir: Path) -> Path:
    dst_dir.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        s = Path(f"{src}{suffix}")
        if s.exists():
            shutil.copyfile(s, dst_dir / f"spool.db{suffix}")
    return dst_dir / "spool.db"


def time_open(path: Path) -> tuple[float, float, int]:
    """(seconds to open, seconds to build the resume point, rows)."""
    from gateway.assembly import resume_point  # noqa: PLC0415
    from gateway.config import load_config  # noqa: PLC0415 - after logging is configured
    from rules import Now  # noqa: PLC0415

    began = time.perf_counter()
    spool = Spool.open(SpoolConfig(path=path, max_bytes=8 << 30))
    opened = time.perf_counter() - began
    config = path.parent / "edgegw.yaml"
    config.write_text(f"gateway: {{id: bench-cut, state_dir: {path.parent}}}\nhttp: {{enabled: false}}\n")
    began = time.perf_counter()
    resume_point(load_config(config), spool, path.parent, Now(time.monotonic(), time.time()))
    resumed = time.perf_counter() - began
    rows = spool.stats().depth
    spool.close(30)
    return opened, resumed, rows


def time_ready(path: Path, broker: Mosquitto) -> float:
    state = path.parent
    config = state / "run.yaml"
    config.write_text(json.dumps({
        "gateway": {"id": "bench-cut", "state_dir": str(state)},
        "mqtt": {"host": broker.host, "port": broker.port},
        "devices": [{"id": "sensor-0000", "topic": "bench/cut/sensor-0000", "profile": "plain",
                     "metric": "temperature"}],
        "bridge": {"spool": {"path": str(path), "max_bytes": "8GiB"}},
        "http": {"enabled": False},
        "log": {"format": "json", "level": "info"},
    }))  # fmt: skip
    began = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "gateway", "run", "--config", str(config)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            try:
                event = json.loads(line).get("event")
            except ValueError:
                continue
            if event == "ready":
                return time.monotonic() - began
        raise SystemExit("edgegw run ended before READY")
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--synchronous", choices=["full", "normal"], default="full")
    parser.add_argument("--dir", type=Path, default=None, help="where the files go (a real disk)")
    args = parser.parse_args()
    configure_logging(level="warning", json=False)
    work = Path(tempfile.mkdtemp(prefix="edgegw-cut-", dir=args.dir))
    broker = Mosquitto(work / "mosquitto")
    try:
        source = work / "cut" / "spool.db"
        source.parent.mkdir(parents=True)
        fill = fill_and_cut(source, args.rows, args.synchronous)
        wal = Path(f"{source}-wal")
        print(f"spool of {args.rows:,} readings filled in {fill:.1f} s (synchronous={args.synchronous}), "
              f"then killed mid-write; WAL left: {wal.stat().st_size / 2**20:.1f} MiB" if wal.exists()
              else "spool filled; no WAL left")  # fmt: skip
        broker.start()
        opens, resumes, readies = [], [], []
        for run in range(args.runs):
            path = copy_spool(source, work / f"run-{run}")
            opened, resumed, rows = time_open(path)
            opens.append(opened)
            resumes.append(resumed)
            path = copy_spool(source, work / f"ready-{run}")
            readies.append(time_ready(path, broker))
            print(f"  run {run + 1}: Spool.open {opened:.2f} s, resume point {resumed:.3f} s, "
                  f"edgegw run spawn to READY {readies[-1]:.2f} s ({rows:,} rows)")  # fmt: skip
        med = statistics.median
        print(f"median of {args.runs}: Spool.open {med(opens):.2f} s, resume point "
              f"{med(resumes):.3f} s, edgegw run spawn to READY {med(readies):.2f} s")
    finally:
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
