"""The compact spool: records packed a group per commit and lane, a lane's head taken under its floor."""

from __future__ import annotations

import contextlib
import sqlite3
import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge import groups, packing
from bridge.envelope import Record
from bridge.forwarder import Forwarder
from bridge.policy import ROW_OVERHEAD, Kind, Priority
from bridge.spool import DeadLetter, Spool
from bridge.status import read_status
from tests.bridge.helpers import FakeClock, FakeUplink, readings, spool_config


def _groups(path: Path) -> list[tuple[int, int, int, int]]:
    """(prio, first_seq, last_seq, n) of every group in the file."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        cur = conn.execute("SELECT prio, first_seq, last_seq, n FROM groups ORDER BY prio, first_seq")
        return [tuple(r) for r in cur]


_records = st.lists(
    st.tuples(
        st.integers(1, 1000),
        st.integers(0, 255),
        st.text(max_size=20),
        st.floats(allow_nan=False),
        st.binary(max_size=200),
    ),
    min_size=1,
    max_size=60,
)


@pytest.mark.parametrize("compress", [True, False])
@given(records=_records, start=st.integers(1, 2**40))
def test_a_group_unpacks_to_what_was_packed(records: list[tuple[int, int, str, float, bytes]], start: int,
                                            compress: bool) -> None:  # fmt: skip
    seqs, at = [], start
    for gap, *_ in records:
        seqs.append(at)
        at += gap
    rows = [(s, k, key, ts, data) for s, (_, k, key, ts, data) in zip(seqs, records, strict=True)]
    packing.COMPRESS = compress
    try:
        first, last, n, size, blob = packing.pack(*zip(*rows, strict=True))
    finally:
        packing.COMPRESS = True
    assert (first, last, n) == (seqs[0], seqs[-1], len(rows))
    assert packing.unpack(first, blob) == rows
    sizes = packing.record_sizes(first, blob)
    assert sizes == [(s, len(data) + len(key) + ROW_OVERHEAD) for s, _, key, _, data in rows]
    assert size == sum(sz for _, sz in sizes)


def test_one_group_per_commit_and_lane(tmp_path: Path) -> None:
    cfg = spool_config(tmp_path)
    with Spool.open(cfg) as spool:
        fired = Record(Kind.RULE_FIRED, "rules/r", 1.0, b"{}")
        spool.append_many([*readings(3), fired, *readings(2, start=3)])
        spool.append_many(readings(4, start=5))
    assert _groups(cfg.path) == [(0, 4, 4, 1), (2, 1, 6, 5), (2, 7, 10, 4)]


def _steps(conn: sqlite3.Connection, sql: str, *args: object) -> int:
    """SQLite VM instructions (in hundreds) one query takes: its work, not its time."""
    count = [0]

    def tick() -> int:
        count[0] += 1
        return 0

    conn.set_progress_handler(tick, 100)
    conn.execute(sql, args).fetchall()
    conn.set_progress_handler(None, 0)
    return count[0]


def test_the_oldest_group_of_any_lane_is_one_seek_however_late_a_sparse_lane_began(tmp_path: Path) -> None:
    """A lane's first group is a scan from the table's head (``groups`` is keyed by
    ``first_seq`` alone), long for a lane whose first record came late in an outage; the
    figures and the TTL check ask for any lane's oldest first, the head itself."""
    cfg = spool_config(tmp_path)
    with Spool.open(cfg) as spool:
        for i in range(2000):
            spool.append_many(readings(1, start=i))
        spool.append_many([Record(Kind.RULE_FIRED, "rules/r", 1.0, b"{}")])
        assert spool.stats().oldest_age is not None
    with contextlib.closing(sqlite3.connect(cfg.path)) as conn:
        late_lane = _steps(conn, "SELECT spooled_at FROM groups WHERE prio = ? ORDER BY first_seq LIMIT 1", 0)
        any_lane = _steps(conn, "SELECT spooled_at FROM groups WHERE prio >= 0 ORDER BY first_seq LIMIT 1")
        assert groups.oldest_spooled_at(conn) == groups.oldest_spooled_at(conn, 2)  # the readings' lane
    assert late_lane > 10 * max(any_lane, 1)  # a scan past 2,000 groups against a seek to the head


def test_shipping_into_a_group_keeps_it_under_the_floor_and_the_figures_hold_after_reopen(
    tmp_path: Path,
) -> None:
    cfg = spool_config(tmp_path)
    spool = Spool.open(cfg)
    spool.append_many(readings(10))
    spool.append_many(readings(10, start=10))
    full = spool.stats().bytes
    spool.settle(delete_upto={Priority.READING: 4}, wait=True)
    assert _groups(cfg.path) == [(2, 1, 10, 10), (2, 11, 20, 10)]  # nothing rewritten
    assert [r.seq for r in spool.reader().fetch(Priority.READING, 0, 100)] == list(range(5, 21))
    assert spool.stats().depth == 16
    figures = spool.stats().by_priority
    spool.close()
    with Spool.open(cfg) as again:
        assert again.stats().by_priority == figures
        assert read_status(cfg.path).depth == 16
        assert again.stats().bytes < full
        again.settle(delete_upto={Priority.READING: 12}, wait=True)  # past the first group: it goes whole
        assert _groups(cfg.path) == [(2, 11, 20, 10)]
        assert [r.seq for r in again.reader().fetch(Priority.READING, 0, 100)] == list(range(13, 21))
        again.settle(delete_upto={Priority.READING: 20}, wait=True)
        assert _groups(cfg.path) == []
        assert again.stats().depth == again.stats().bytes == 0


def test_the_cap_drops_single_records_from_the_head_of_a_group(tmp_path: Path) -> None:
    """The policy stays per record: the oldest readings up to the bytes needed, not whole groups."""
    cfg = spool_config(tmp_path, max_bytes=40_000)
    spool = Spool.open(cfg)
    spool.append_many(readings(200))  # one group of ~36 kB
    spool.append_many(readings(30, start=200))
    stats = spool.stats()
    assert stats.bytes <= 40_000
    kept = [r.seq for r in spool.reader().fetch(Priority.READING, 0, 1000)]
    assert kept == list(range(231 - len(kept), 231))
    assert stats.dropped["cap"] == 230 - len(kept) < 40, "records, not the whole first group"
    assert _groups(cfg.path)[0][1] == 1, "the first group stays, its head under the floor"
    spool.close()
    with Spool.open(cfg) as again:
        assert again.stats().depth == len(kept)
        assert again.stats().bytes == stats.bytes


def test_ttl_takes_whole_commits(tmp_path: Path) -> None:
    clock = FakeClock()
    cfg = spool_config(tmp_path, ttl="1h")
    spool = Spool.open(cfg, clock=clock)
    spool.append_many(readings(10))
    spool.settle(delete_upto={Priority.READING: 3}, wait=True)  # the group straddles the floor
    clock.advance(1800)
    spool.append_many(readings(5, start=10))
    clock.advance(1801)
    spool.append_many(readings(1, start=15))
    assert [r.seq for r in spool.reader().fetch(Priority.READING, 0, 100)] == list(range(11, 17))
    assert spool.stats().dropped["ttl"] == 7, "only what was left of the first commit"
    assert spool.stats().depth == 6
    spool.close()


def test_a_poison_record_in_a_group_goes_to_the_dead_letters_and_its_neighbours_ship_once(
    tmp_path: Path,
) -> None:
    cfg = spool_config(tmp_path)
    spool = Spool.open(cfg)
    spool.append_many(readings(20))
    uplink = FakeUplink(refuse_seqs={7, 8, 20})
    forwarder = Forwarder(spool, uplink.factory, gateway_id="gw", topic_of_kind=dict.fromkeys(Kind, "t"),
                          heartbeat_topic=None, batch_rows=6)  # fmt: skip
    while forwarder.step(spool.reader().fetch):
        pass
    spool.flush()
    assert [m.seq for m in uplink.committed] == [s for s in range(1, 21) if s not in (7, 8, 20)]
    assert spool.stats().dead_letters == 3
    assert spool.stats().depth == 0
    assert _groups(cfg.path) == []
    spool.close()


def test_a_dead_letter_rewrites_its_group_without_it(tmp_path: Path) -> None:
    cfg = spool_config(tmp_path)
    spool = Spool.open(cfg)
    spool.append_many(readings(6))
    spool.settle(delete_upto={Priority.READING: 2}, wait=True)
    spool.settle(dead=[DeadLetter(4, Priority.READING, "r", "e"), DeadLetter(1, Priority.READING, "r", "e")],
                 wait=True)  # fmt: skip
    assert spool.stats().dead_letters == 1, "seq 1 was shipped already"
    assert _groups(cfg.path) == [(2, 3, 6, 3)]
    assert [r.seq for r in spool.reader().fetch(Priority.READING, 0, 100)] == [3, 5, 6]
    assert spool.stats().depth == 3
    spool.close()


def test_rebase_moves_groups_and_floor_of_this_run(tmp_path: Path) -> None:
    cfg = spool_config(tmp_path)
    with Spool.open(cfg) as spool:
        spool.append_many(readings(5))
    spool = Spool.open(cfg)
    spool.append_many(readings(5, start=5))  # seqs 6..10 of this run
    spool.settle(delete_upto={Priority.READING: 7}, wait=True)  # as a cap drop would, before the checkpoint
    assert spool.rebase(20) == 5
    assert _groups(cfg.path) == [(2, 21, 25, 5)]  # the floor moved with them: 6 and 7 stay taken
    assert [r.seq for r in spool.reader().fetch(Priority.READING, 0, 100)] == [23, 24, 25]
    spool.append_many(readings(1, start=10))
    assert [r.seq for r in spool.reader().fetch(Priority.READING, 0, 100)] == [23, 24, 25, 26]
    assert spool.stats().depth == 4
    spool.close()


def test_the_counter_is_not_written_by_appends_and_never_goes_back(tmp_path: Path) -> None:
    cfg = spool_config(tmp_path)
    spool = Spool.open(cfg)
    spool.append_many(readings(5))
    spool.settle(delete_upto={Priority.READING: 5}, wait=True)  # the spool is empty: the counter is stored
    spool.append_many(readings(5, start=5))
    spool.close()
    with contextlib.closing(sqlite3.connect(cfg.path)) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key = 'next_seq'").fetchone() == ("6",)
    with Spool.open(cfg) as again:  # the groups say the rest
        again.append_many(readings(1, start=10))
        assert [r.seq for r in again.reader().fetch(Priority.READING, 0, 100)] == [*range(6, 12)]
        again.settle(delete_upto={Priority.READING: 11}, wait=True)
    with Spool.open(cfg) as third:
        third.append_many(readings(1, start=11))
        assert [r.seq for r in third.reader().fetch(Priority.READING, 0, 100)] == [12]


def test_a_side_row_round_trips_and_a_foreign_blob_is_refused() -> None:
    state = {"d": {"rule:a": {"wall": 1.5, "leaves": [{"value": 21.3}]}}, "s": {"summary": {"x": None}}}
    pack_side, unpack_side = packing.pack_side, packing.unpack_side
    blob = pack_side(12.5, [(1, -(2**63)), (65535, 2**63 - 1)], state)
    assert unpack_side(blob) == (12.5, [(1, -(2**63)), (65535, 2**63 - 1)], state)
    assert unpack_side(pack_side(1.0, [], None)) == (1.0, [], {})
    with pytest.raises(ValueError, match="side row format"):
        unpack_side(packing.pack([1], [1], ["k"], [1.0], [b"x"])[4] + bytes(16))


def test_a_commits_packet_ids_pack_small_and_rows_of_earlier_versions_still_read() -> None:
    origins = [(slot, (slot * 0x9E3779B97F4A7C15) % 2**63) for slot in range(40_000, 40_100)]
    blob = packing.pack_side(3.0, origins, None)
    assert packing.unpack_side(blob) == (3.0, origins, {})
    assert len(blob) < 100 * 9  # 12 bytes a packet id unpacked: the consecutive ids shrink
    # a side row as the schema 5 writer of edgegw 0.x made it: ids and digests as they are
    old = struct.pack("<BBdI", 129, 0, 3.0, 2) + struct.pack("<II", 7, 8) + struct.pack("<qq", -5, 6)
    assert packing.unpack_side(old) == (3.0, [(7, -5), (8, 6)], {})
    with pytest.raises(ValueError, match="packet ids"):
        packing.unpack_side(old[:-4])
