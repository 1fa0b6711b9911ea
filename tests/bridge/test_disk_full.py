"""Disk full: SQLite's full condition (max_page_count) and a real full filesystem (tmpfs).

The overflow policy applies (oldest readings first, counted as ``disk_full``, logged), the
spool keeps working, it takes rows again once there is room, and the file is never corrupt.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from bridge import packing
from bridge.config import SpoolConfig
from bridge.policy import Priority
from bridge.spool import Spool
from gateway.model import Event, EventKind
from tests.bridge.helpers import readings


@pytest.fixture(autouse=True)
def _uncompressed(monkeypatch: pytest.MonkeyPatch) -> None:
    """These readings compress ~10x: the groups are stored as they are, so the files fill
    as the figures below say (the full condition is what is tested, not zlib)."""
    monkeypatch.setattr(packing, "COMPRESS", False)


def _integrity(path: Path) -> str:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


def _fill(spool: Spool, batches: int, start: int = 0) -> int:
    n = start
    for _ in range(batches):
        spool.append_many(readings(200, start=n))
        n += 200
    return n


def test_max_page_count_full_applies_the_policy_and_recovers(tmp_path: Path) -> None:
    cfg = SpoolConfig(path=tmp_path / "spool.db", max_pages=400, wal_autocheckpoint=128)  # 400 KiB
    spool = Spool.open(cfg)
    spool.append_many([Event(EventKind.FIRED, f"rule-{i}", 1.0) for i in range(20)])
    with capture_logs() as logs:
        n = _fill(spool, 30)  # 6000 readings, ~1 MB of rows: cannot fit
    stats = spool.stats()
    assert stats.failed is None, "the spool stays up"
    assert stats.dropped["disk_full"] > 0
    assert stats.by_priority[Priority.EVENT].rows == 20, "rule events are dropped last"
    assert any(e["event"] == "spool: storage full, dropping by policy" for e in logs)
    assert any(e.get("reason") == "disk_full" for e in logs)
    kept = [r.seq for r in spool.reader().fetch(Priority.READING, 0, 100_000)]
    assert kept == sorted(kept)
    assert kept[-1] == 20 + n, "the newest readings are kept"

    # room returns (the uplink shipped the backlog): rows are taken again, nothing more dropped
    spool.settle(delete_upto={Priority.READING: kept[-1]}, wait=True)
    dropped = spool.stats().dropped["disk_full"]
    _fill(spool, 3, start=n)
    assert spool.stats().dropped["disk_full"] == dropped
    assert spool.stats().by_priority[Priority.READING].rows == 600
    spool.close()
    assert _integrity(cfg.path) == "ok"


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount(8) here")
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {result.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.slow
def test_a_full_filesystem_applies_the_policy_and_recovers(small_tmpfs: Path) -> None:
    cfg = SpoolConfig(path=small_tmpfs / "spool.db", wal_autocheckpoint=64, reserve_bytes=512 * 1024)
    spool = Spool.open(cfg)
    spool.append_many([Event(EventKind.FIRED, f"rule-{i}", 1.0) for i in range(20)])
    with capture_logs() as logs:
        n = _fill(spool, 60)  # 12,000 readings, ~2.2 MB of rows into a 2 MiB filesystem
    stats = spool.stats()
    assert stats.failed is None, "the spool stays up"
    assert stats.dropped["disk_full"] > 0
    assert stats.by_priority[Priority.EVENT].rows == 20
    assert any(e["event"] == "spool: storage full, dropping by policy" for e in logs)
    kept = [r.seq for r in spool.reader().fetch(Priority.READING, 0, 100_000)]
    assert kept[-1] == 20 + n

    # space returns: the filesystem grows; new rows go in without new drops
    subprocess.run(["mount", "-o", "remount,size=16m", str(small_tmpfs)], check=True)
    with capture_logs() as logs:
        time.sleep(1.1)  # the writer looks for room once a second
        spool.append_many(readings(1, start=n))
        n += 1
    assert any(e["event"] == "spool: room again after a full disk" for e in logs)
    assert (small_tmpfs / "spool.db-reserve").exists()
    dropped = spool.stats().dropped["disk_full"]
    depth = spool.stats().depth
    _fill(spool, 10, start=n)
    assert spool.stats().dropped["disk_full"] == dropped
    assert spool.stats().depth == depth + 2000
    spool.close()
    assert _integrity(cfg.path) == "ok"
