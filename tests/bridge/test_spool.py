"""The spool: group commit, durability callbacks, lanes, cap, TTL, redelivery, dead letters."""

from __future__ import annotations

import contextlib
import math
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from structlog.testing import capture_logs

from bridge import packing
from bridge.config import SpoolConfig
from bridge.envelope import Record
from bridge.groups import floors, read_lane
from bridge.policy import Kind, Priority
from bridge.spool import DeadInput, DeadLetter, Spool
from gateway.errors import SpoolError
from gateway.model import Command, Event, EventKind, Reading
from tests.bridge.helpers import FakeClock, readings, spool_config


def _all_rows(path: Path) -> list[tuple[int, int, str]]:
    """(prio, seq, key) of every record in the file, above each lane's floor."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        lanes = floors(conn)
        stored = {p for (p,) in conn.execute("SELECT DISTINCT prio FROM groups WHERE prio >= 0")}
        return [
            (prio, seq, key)
            for prio in sorted(stored)
            for seq, _kind, key, _ts, _data in read_lane(conn, prio, lanes.get(prio, 0), 1 << 30)
        ]


def test_rows_are_durable_when_on_durable_runs_and_survive_reopen(tmp_path: Path) -> None:
    cfg = spool_config(tmp_path)
    spool = Spool.open(cfg)
    seen: list[tuple[str, int]] = []
    done = threading.Event()

    def on_durable() -> None:
        # committed before the callback runs: a second connection sees every row
        seen.append((threading.current_thread().name, len(_all_rows(cfg.path))))
        done.set()

    spool.submit(readings(50), on_durable)
    assert done.wait(10)
    assert seen == [("edgegw-spool-writer", 50)]
    spool.close()
    with Spool.open(cfg) as again:
        assert again.stats().depth == 50
        assert [r.seq for r in again.reader().fetch(Priority.READING, 0, 100)] == list(range(1, 51))


def test_group_commit_puts_many_batches_in_one_transaction(tmp_path: Path) -> None:
    spool = Spool.open(spool_config(tmp_path, commit_interval="50ms", commit_rows=100_000))
    acked: list[int] = []
    all_acked = threading.Event()

    def ack() -> None:
        acked.append(1)
        if len(acked) == 200:
            all_acked.set()

    for i in range(200):
        spool.submit(readings(5, start=i * 5), ack)
    assert all_acked.wait(10)
    stats = spool.stats()
    assert stats.committed_rows == 1000
    assert stats.commits <= 5, stats
    assert stats.durable_ms_p50 is not None
    spool.close()


def test_commit_rows_bounds_a_group(tmp_path: Path) -> None:
    spool = Spool.open(spool_config(tmp_path, commit_interval="1s", commit_rows=10))
    for i in range(10):
        spool.submit(readings(10, start=i * 10))
    spool.flush()
    assert spool.stats().commits >= 10  # one group per 10 rows, not one per second
    spool.close()


def test_lanes_hold_each_kind_in_spool_order(tmp_path: Path) -> None:
    spool = Spool.open(spool_config(tmp_path))
    t = 1_800_000_000.0
    spool.append_many(
        [
            Reading("a", "t", 1.0, t, t),
            Event(EventKind.FIRED, "hot", t, values={"a/t": 30.0}),
            Command("a/ac", {"state": "on"}, "hot", t),
            Reading("a", "t", 2.0, t, t),
            Event(EventKind.CLEARED, "hot", t),
        ]
    )
    reader = spool.reader()
    assert [(r.seq, r.kind) for r in reader.fetch(Priority.EVENT, 0, 10)] == [
        (2, Kind.RULE_FIRED),
        (5, Kind.RULE_CLEARED),
    ]
    assert [r.seq for r in reader.fetch(Priority.COMMAND, 0, 10)] == [3]
    assert [r.seq for r in reader.fetch(Priority.READING, 0, 10)] == [1, 4]
    assert [r.seq for r in reader.fetch(Priority.READING, 1, 10)] == [4]
    stats = spool.stats()
    assert stats.by_priority[Priority.EVENT].rows == 2
    assert stats.depth == 5
    spool.close()


def test_cap_drops_oldest_readings_first_counted_and_logged(tmp_path: Path) -> None:
    spool = Spool.open(spool_config(tmp_path, max_bytes=20_000))
    spool.append_many(readings(100))  # ~180 bytes each: 18 kB
    t = 1_800_000_000.0
    with capture_logs() as logs:
        spool.append_many([Event(EventKind.FIRED, f"rule-{i}", t) for i in range(40)])
    stats = spool.stats()
    assert stats.bytes <= 20_000
    assert stats.by_priority[Priority.EVENT].rows == 40  # every event kept
    assert stats.dropped["cap"] > 0
    kept = [r.seq for r in spool.reader().fetch(Priority.READING, 0, 1000)]
    assert kept == list(range(101 - len(kept), 101)), "the oldest readings went, the newest stayed"
    assert any(e["event"] == "spool: oldest rows dropped" and e["reason"] == "cap" for e in logs)
    # readings arriving at a spool full of events are what gets dropped
    spool.append_many([Event(EventKind.FIRED, f"more-{i}", t) for i in range(60)])
    spool.append_many(readings(5, start=1000))
    stats = spool.stats()
    assert stats.bytes <= 20_000
    assert stats.by_priority[Priority.EVENT].rows + stats.by_priority[Priority.READING].rows < 200
    spool.close()


def test_ttl_drops_old_rows_on_a_fake_clock(tmp_path: Path) -> None:
    clock = FakeClock()
    spool = Spool.open(spool_config(tmp_path, ttl="1h"), clock=clock)
    spool.append_many(readings(10))
    clock.advance(1800)
    spool.append_many(readings(5, start=10))
    clock.advance(1801)  # the first 10 are now older than 1 h, the last 5 are not
    with capture_logs() as logs:
        spool.append_many(readings(1, start=15))
    assert [r.seq for r in spool.reader().fetch(Priority.READING, 0, 100)] == list(range(11, 17))
    assert spool.stats().dropped["ttl"] == 10
    assert any(e["event"] == "spool: rows past TTL dropped" for e in logs)
    spool.close()


def test_unencodable_items_are_counted_and_the_batch_still_acked(tmp_path: Path) -> None:
    spool = Spool.open(spool_config(tmp_path))
    done = threading.Event()
    bad = Reading("a", "t", math.nan, 1.0, 1.0)
    spool.submit([bad, *readings(2)], done.set)
    assert done.wait(10)
    spool.flush()
    assert spool.stats().depth == 2
    assert spool.stats().dropped["unencodable"] == 1
    spool.close()


def test_dead_letters_move_rows_and_keep_them(tmp_path: Path) -> None:
    cfg = spool_config(tmp_path)
    spool = Spool.open(cfg)
    spool.append_many([*readings(3), Record(Kind.READING, "x", 1.0, b'{"big":1}')])
    spool.settle(dead=[DeadLetter(4, Priority.READING, "msg_size_too_large", "too large")], wait=True)
    assert spool.stats().depth == 3
    assert spool.stats().dead_letters == 1
    spool.close()
    with sqlite3.connect(cfg.path) as conn:
        assert conn.execute("SELECT seq, kind, key, data, reason FROM dead_letters").fetchall() == [
            (4, "reading", "x", b'{"big":1}', "msg_size_too_large")
        ]


def test_sequences_are_never_reused_after_everything_was_shipped(tmp_path: Path) -> None:
    cfg = spool_config(tmp_path)
    spool = Spool.open(cfg)
    spool.append_many(readings(5))
    spool.settle(delete_upto={Priority.READING: 5}, wait=True)
    spool.close()
    with Spool.open(cfg) as spool:
        spool.append_many(readings(1))
        assert [r.seq for r in spool.reader().fetch(Priority.READING, 0, 10)] == [6]


@pytest.mark.parametrize(("mode", "expected"), [("normal", 1), ("full", 2)])
def test_synchronous_mode(tmp_path: Path, mode: str, expected: int) -> None:
    spool = Spool.open(spool_config(tmp_path, synchronous=mode))
    assert spool._store.conn.execute("PRAGMA synchronous").fetchone()[0] == expected
    assert spool._store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    spool.close()


def test_submit_after_close_fails(tmp_path: Path) -> None:
    spool = Spool.open(spool_config(tmp_path))
    spool.close()
    with pytest.raises(SpoolError):
        spool.submit(readings(1))


def test_a_database_that_is_not_a_spool_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE other (x)")
    with pytest.raises(SpoolError, match="not an edgegw spool"):
        Spool.open(spool_config(tmp_path))



def test_marks_rule_state_and_dead_input_commit_with_the_batch_and_survive_reopen(tmp_path: Path) -> None:
    """What the pipeline hands with a batch is in the same transaction as its rows."""
    cfg = spool_config(tmp_path)
    spool = Spool.open(cfg)
    spool.append_many(readings(2), marks=[(7, 111), (8, 222)], state={"rule:a": {"fired": True}})
    spool.submit([], None, dead=[DeadInput("home/x", b"\xff", "decoder_error", "ValueError: boom")])
    spool.append_many(readings(1), marks=[(7, 333)], state={"rule:a": {"fired": False}, "rule:b": {}})
    spool.close()

    spool = Spool.open(cfg)
    assert sorted(spool.marks()) == [(7, 333), (8, 222)]  # one slot per packet id: 7 was reused
    assert spool.rule_state() == {"rule:a": {"fired": False}, "rule:b": {}}
    assert spool.stats().depth == 3
    assert spool.stats().dead_letters == 1
    spool.close()


def test_side_rows_are_one_log_row_per_commit_replayed_at_open_and_folded_at_close(tmp_path: Path) -> None:
    """Marks and rule state are a side row of ``groups`` (one per commit, beside the
    commit's groups, never an upsert of the pages the keys live on); an open replays what
    was not folded, in commit order; a fold writes each key once, with its last value."""
    cfg = spool_config(tmp_path)
    spool = Spool.open(cfg)
    for i in range(5):
        spool.append_many(readings(1, start=i), marks=[(i % 2, 100 + i)],
                          state={"rule:a": {"n": i, "fp": "x", "deep": {"v": [i]}}})  # fmt: skip
    spool.append_many([], state={"rule:b": {"gone": 1}})
    spool.append_many([], state={"rule:b": {"other": 2}})  # a field less: written whole
    with sqlite3.connect(cfg.path) as conn:
        assert conn.execute("SELECT count(*) FROM groups WHERE prio = -1").fetchone()[0] == 7
        assert conn.execute("SELECT count(*) FROM rule_state").fetchone()[0] == 0
    # a killed process: nothing folded, the log replayed
    with sqlite3.connect(cfg.path) as conn:
        copy = sqlite3.connect(tmp_path / "copy.db")
        conn.backup(copy)
        copy.close()
    replayed = Spool.open(SpoolConfig(path=tmp_path / "copy.db"))
    state = {"rule:a": {"n": 4, "fp": "x", "deep": {"v": [4]}}, "rule:b": {"other": 2}}
    assert replayed.rule_state() == state
    assert replayed.marks() == [(1, 103), (0, 104)]
    replayed.close()
    spool.close()
    with sqlite3.connect(cfg.path) as conn:
        assert conn.execute("SELECT count(*) FROM groups WHERE prio = -1").fetchone()[0] == 0
        assert [k for (k,) in conn.execute("SELECT key FROM rule_state ORDER BY key")] == ["rule:a", "rule:b"]
    again = Spool.open(cfg)
    assert again.rule_state() == state
    assert again.marks() == [(1, 103), (0, 104)]
    again.close()


def test_a_list_that_grows_at_its_tail_is_logged_as_what_it_dropped_and_added(tmp_path: Path) -> None:
    """A loop guard's fire history (every fire of its window) changes with each fire: the
    side row carries the fires that came and how many went, not the whole history again
    (SD-card wear: it was most of a side row at 100 readings/s). A replay rebuilds it."""
    cfg = spool_config(tmp_path)
    spool = Spool.open(cfg)
    fires = [1000.0 + i / 7 for i in range(300)]
    expected: dict[str, Any] = {}
    for i in range(6):
        fires = [*fires[3:], *(2000.0 + i + k / 10 for k in range(3))]
        expected = {"fires_ago": fires, "leaves": [{"met": i % 2 == 0}], "fp": "x",
                    "other": [i] if i < 3 else [9, 8, 7, 6, 5, i]}  # fmt: skip
        spool.append_many(readings(1, start=i), state={"rule:g": dict(expected)})
    with sqlite3.connect(cfg.path) as conn:
        query = "SELECT blob FROM groups WHERE prio = -1 ORDER BY first_seq"
        blobs = [bytes(b) for (b,) in conn.execute(query)]
    *_, doc = packing.unpack_side(blobs[-1])
    assert doc["l"]["rule:g"]["fires_ago"] == [3, fires[-3:]]
    assert doc["d"]["rule:g"] == {"leaves": [{"met": False}], "other": [9, 8, 7, 6, 5, 5]}
    assert len(blobs[-1]) < len(blobs[0]) / 4
    replayed = Spool.open(SpoolConfig(path=_killed_copy(cfg.path, tmp_path / "copy.db")))
    assert replayed.rule_state() == {"rule:g": expected}
    replayed.close()
    spool.close()
    again = Spool.open(cfg)
    assert again.rule_state() == {"rule:g": expected}
    again.close()


def _killed_copy(path: Path, to: Path) -> Path:
    """The file as a killed process leaves it (nothing folded at close)."""
    with sqlite3.connect(path) as conn:
        copy = sqlite3.connect(to)
        conn.backup(copy)
        copy.close()
    return to


def test_above_time_batching_rates_side_rows_are_folded_and_state_upserted_in_place(tmp_path: Path) -> None:
    """Without time batching (``commit_max_delay: 0``, or hundreds of commits a second)
    marks and rule state are upserted in place; the side rows a slower run left are folded first, so a
    replay never puts their older state over the newer."""
    slow = Spool.open(spool_config(tmp_path))
    for i in range(3):
        slow.append_many(readings(1, start=i), marks=[(7, 100 + i)], state={"rule:a": {"n": i, "fp": "x"}})
    first = _killed_copy(slow.path, tmp_path / "first.db")
    slow.close()
    fast = Spool.open(SpoolConfig(path=first, commit_max_delay=0))
    assert fast.rule_state() == {"rule:a": {"n": 2, "fp": "x"}}
    fast.append_many(readings(1, start=10), marks=[(8, 200)], state={"rule:a": {"n": 9, "fp": "x"}})
    with sqlite3.connect(first) as conn:
        assert conn.execute("SELECT count(*) FROM groups WHERE prio = -1").fetchone()[0] == 0
        assert orjson.loads(conn.execute("SELECT data FROM rule_state").fetchone()[0]) == {"n": 9, "fp": "x"}
    second = _killed_copy(first, tmp_path / "second.db")
    fast.close()
    again = Spool.open(SpoolConfig(path=second))
    assert again.rule_state() == {"rule:a": {"n": 9, "fp": "x"}}
    assert again.marks() == [(7, 102), (8, 200)]
    again.close()


def test_a_writer_thread_that_raises_anything_fails_the_spool_and_voids_every_batch(tmp_path: Path) -> None:
    """Not only sqlite3.Error: any exception ends the writer with a recorded failure, and
    every batch it had not committed is voided (nobody waits on a batch nobody settles)."""
    spool = Spool.open(spool_config(tmp_path, commit_interval="200ms"))
    settled: list[str] = []

    def boom(ops: object, *, side_rows: bool = True) -> int:
        raise KeyError("a bug in the writer")

    spool._writer.group = boom  # type: ignore[method-assign]
    for i in range(3):
        spool.submit(readings(1, start=i), lambda: settled.append("durable"),
                     on_void=lambda: settled.append("void"))  # fmt: skip
    with pytest.raises(SpoolError, match="KeyError"):
        spool.flush(timeout=10)
    assert settled == ["void", "void", "void"]
    spool._thread.join(10)  # it ends right after waking the waiters
    assert not spool.writer_alive
    assert spool.failed is not None
    assert spool.stats().failed is not None
    with pytest.raises(SpoolError):
        spool.submit(readings(1))
    spool.close()


def test_committed_rows_counts_only_rows_in_the_file(tmp_path: Path) -> None:
    """A group that cannot be written even after every remedy is counted as dropped
    (disk_full), not as committed."""
    spool = Spool.open(spool_config(tmp_path, reserve_bytes=0))
    spool.append_many(readings(3))

    def full(rows: object) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    spool._store.insert = full  # type: ignore[method-assign]
    spool.append_many(readings(4, start=3))
    stats = spool.stats()
    assert stats.committed_rows == 3
    assert stats.dropped["disk_full"] >= 4
    spool.close()


def test_a_spool_file_deleted_while_open_is_saved_back_and_the_spool_fails(tmp_path: Path) -> None:
    """SQLite would go on writing to the deleted file, and everything in it would be gone
    at the next start. The writer notices within a second, copies what the open file holds
    back to the path and fails, so the runtime reopens the copy."""
    cfg = spool_config(tmp_path)
    spool = Spool.open(cfg)
    spool.append_many(readings(5), state={"rule:a": {"fired": True}})
    for suffix in ("", "-wal", "-shm"):
        Path(f"{cfg.path}{suffix}").unlink(missing_ok=True)
    durable: list[int] = []
    deadline = time.monotonic() + 10
    seq = 5
    while spool.failed is None and time.monotonic() < deadline:  # these go into the deleted file
        spool.submit(readings(1, start=seq), lambda n=seq: durable.append(n))  # type: ignore[misc]
        seq += 1
        time.sleep(0.05)
    assert spool.failed is not None
    assert "deleted" in str(spool.failed)
    assert len(durable) >= 5  # a second's worth went into the deleted file before it was noticed
    spool.close()

    again = Spool.open(cfg)
    assert again.stats().depth == 5 + len(durable)  # nothing that was durable is lost
    assert again.rule_state() == {"rule:a": {"fired": True}}
    again.close()
