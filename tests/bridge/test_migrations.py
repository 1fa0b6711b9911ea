"""Upgrades: a spool written by the previous schema is migrated in place, nothing discarded."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest

from bridge.checkpoint import Checkpoint
from bridge.envelope import Record
from bridge.forwarder import Forwarder
from bridge.migrations import SCHEMA_V1, SCHEMA_V3, SCHEMA_V4, SCHEMA_VERSION
from bridge.packing import pack
from bridge.policy import Kind, Priority
from bridge.spool import Spool
from gateway.errors import SpoolError
from tests.bridge.helpers import FakeUplink, spool_config


def _v1_spool(path: Path) -> None:
    """A spool as edgegw 0.0.x wrote it (schema 1), with one kind this edgegw does not know."""
    conn = sqlite3.connect(path)
    conn.executescript("PRAGMA journal_mode = WAL;" + SCHEMA_V1)
    now = time.time()

    def reading(value: float, ts: float) -> str:
        return json.dumps({"device_id": "boiler", "metric": "t", "value": value, "unit": "C", "ts": ts,
                           "received_at": ts, "clock_synced": True})  # fmt: skip

    fired = {"rule_id": "hot", "kind": "fired", "severity": "warning", "message": "", "values": {}, "ts": 2.0}
    rows = [
        ("reading", "boiler", 1.0, now, reading(60.5, 1.0)),
        ("rule.fired", "rules/hot", 2.0, now, json.dumps(fired)),
        ("video.frame", "cam-1", 3.0, now, '{"frame": 1}'),
        ("reading", "boiler", 4.0, now, reading(61.0, 4.0)),
    ]
    conn.executemany("INSERT INTO spool(kind, device, ts, created, payload) VALUES (?, ?, ?, ?, ?)", rows)
    conn.commit()
    conn.close()


def test_a_schema_1_spool_is_migrated_in_place_and_its_rows_shipped(tmp_path: Path) -> None:
    cfg = spool_config(tmp_path)
    _v1_spool(cfg.path)
    spool = Spool.open(cfg)
    assert spool.migrated_from == 1
    assert spool._store.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    stats = spool.stats()
    assert stats.depth == 3
    assert stats.dead_letters == 1  # the unknown kind is kept, not discarded
    with sqlite3.connect(cfg.path) as conn:
        assert conn.execute("SELECT seq, kind, key, data, reason FROM dead_letters").fetchall() == [
            (3, "video.frame", "cam-1", b'{"frame": 1}', "unknown_kind")
        ]
    # new rows continue the old sequence
    spool.append_many([])
    uplink = FakeUplink()
    forwarder = Forwarder(
        spool, uplink.factory, gateway_id="gw", topic_of_kind=dict.fromkeys(Kind, "t"),
        heartbeat_topic=None,
    )  # fmt: skip
    while forwarder.step(spool.reader().fetch):
        pass
    assert [(m.seq, json.loads(m.value).get("value")) for m in uplink.committed] == [
        (2, None),
        (1, 60.5),
        (4, 61.0),
    ]
    spool.close()


def _v3_spool(path: Path, readings: int) -> None:
    """A spool as edgegw wrote it before the compact spool (schema 3, one row per event): rule
    events and ``readings`` readings in commits of 7 rows, a kind of a later version (99) and
    one no group can hold (300), rule state and redelivery marks."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript(SCHEMA_V3)
    at = time.time() - 60
    conn.executemany("INSERT INTO meta(key, value) VALUES (?, ?)",
                     [("spool_id", "v3spool"), ("created_at", "1.0"), ("next_seq", str(readings + 10))])
    rows = [(0, 1, int(Kind.RULE_FIRED), "rules/hot", 1.0, at, b'{"rule_id":"hot"}'),
            (2, readings + 5, 99, "cam-1", 2.0, at + 30, b'{"frame":1}'),
            (2, 3, 300, "cam-2", 3.0, at, b'{"frame":2}')]
    rows += [(2, seq, int(Kind.READING), f"dev-{seq % 3}", float(seq), at + seq // 7,
              json.dumps({"device_id": f"dev-{seq % 3}", "value": seq}).encode())
             for seq in range(4, readings + 4)]
    rows.append((0, readings + 4, int(Kind.RULE_CLEARED), "rules/hot", 9.0, at + 30, b'{"rule_id":"hot"}'))
    conn.executemany("INSERT INTO rows(prio, seq, kind, key, ts, spooled_at, data)"
                     " VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    conn.execute("INSERT INTO rule_state(key, data) VALUES ('rule:hot', '{\"on\":true}')")
    conn.execute("INSERT INTO recent_origins(slot, digest, at) VALUES (7, 77, 1.0)")
    conn.close()  # fmt: skip


def test_a_schema_3_spool_is_packed_in_place_and_its_rows_shipped_exactly_once(tmp_path: Path) -> None:
    """Rows Kafka has (the checkpoint says readings up to 20) are not shipped again, every
    other row is, once, in order; nothing is discarded; state and marks survive."""
    cfg = spool_config(tmp_path)
    _v3_spool(cfg.path, 50)
    spool = Spool.open(cfg)
    assert spool.migrated_from == 3
    assert spool.rule_state() == {"rule:hot": {"on": True}}
    assert spool.marks() == [(7, 77)]
    stats = spool.stats()
    assert (stats.depth, stats.dead_letters) == (53, 1)  # kind 300 kept as a dead letter
    with sqlite3.connect(cfg.path) as conn:
        assert conn.execute("SELECT seq, kind, key, reason FROM dead_letters").fetchall() == [
            (3, "300", "cam-2", "unknown_kind")
        ]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert "rows" not in tables
        assert conn.execute("SELECT count(*) FROM groups").fetchone()[0] < 53 // 2
    spool.append_many([Record(Kind.READING, "dev-new", 1.0, b'{"value":"new"}')])
    uplink = FakeUplink(checkpoint=Checkpoint("gw", "v3spool", {2: 20}))
    forwarder = Forwarder(
        spool, uplink.factory, gateway_id="gw", topic_of_kind=dict.fromkeys(Kind, "t"),
        heartbeat_topic=None, batch_rows=16,
    )  # fmt: skip
    while forwarder.step(spool.reader().fetch):
        pass
    seqs = [m.seq for m in uplink.committed]
    assert seqs == [1, 54, *range(21, 54), 60]  # events lane first; kind 99 went to dead letters
    assert json.loads(uplink.committed[-1].value) == {"value": "new"}
    spool.flush()
    assert spool.stats().depth == 0
    assert spool.stats().dead_letters == 2
    spool.close()


def test_a_schema_4_spool_is_rekeyed_in_place_and_keeps_everything(tmp_path: Path) -> None:
    """Version 5 keys ``groups`` by ``first_seq``: groups, floors, state and marks are kept;
    state and marks written after the upgrade go to side rows and win over the folded ones."""
    cfg = spool_config(tmp_path)
    conn = sqlite3.connect(cfg.path)
    conn.executescript("PRAGMA journal_mode = WAL;" + SCHEMA_V4)
    conn.executemany("INSERT INTO meta(key, value) VALUES (?, ?)",
                     [("spool_id", "v4spool"), ("created_at", "1.0"), ("next_seq", "6")])  # fmt: skip
    datas = [b'{"v":%d}' % i for i in range(5)]
    first, last, n, size, blob = pack([1, 2, 3, 4, 5], [int(Kind.READING)] * 5, ["dev"] * 5,
                                      [1.0, 2.0, 3.0, 4.0, 5.0], datas)  # fmt: skip
    conn.execute("INSERT INTO groups(prio, first_seq, last_seq, n, size, spooled_at, blob)"
                 " VALUES (2, ?, ?, ?, ?, ?, ?)", (first, last, n, size, time.time(), blob))  # fmt: skip
    conn.execute("INSERT INTO floors(prio, seq) VALUES (2, 2)")
    conn.execute("INSERT INTO rule_state(key, data) VALUES ('rule:hot', '{\"on\":true}')")
    conn.execute("INSERT INTO recent_origins(slot, digest, at) VALUES (7, 77, 1.0)")
    conn.commit()
    conn.close()
    spool = Spool.open(cfg)
    assert spool.migrated_from == 4
    assert (spool.rule_state(), spool.marks()) == ({"rule:hot": {"on": True}}, [(7, 77)])
    assert spool.stats().depth == 3  # 1 and 2 are under the floor
    assert [r.seq for r in spool.reader().fetch(2, 0, 10)] == [3, 4, 5]
    spool.append_many([Record(Kind.READING, "dev", 6.0, b"{}")], marks=[(7, 78)],
                      state={"rule:hot": {"on": False}})  # fmt: skip
    spool._thread.join(0)  # not closed: the log is not folded, the next open replays it
    spool._store.conn.close()
    again = Spool.open(cfg)
    assert again.migrated_from == SCHEMA_VERSION
    assert (again.rule_state(), again.marks()) == ({"rule:hot": {"on": False}}, [(7, 78)])
    assert again.stats().depth == 4
    again.close()


def test_migration_is_one_transaction(tmp_path: Path) -> None:
    cfg = spool_config(tmp_path)
    _v1_spool(cfg.path)
    with sqlite3.connect(cfg.path) as conn:  # a row the migration cannot insert: it must change nothing
        conn.execute(
            "INSERT INTO spool(kind, device, ts, created, payload) VALUES ('reading', 'x', 1, 1, X'ff')"
        )
        conn.execute("CREATE TABLE rows (x)")  # clashes with the new table
    with pytest.raises((SpoolError, sqlite3.Error)):
        Spool.open(cfg)
    with sqlite3.connect(cfg.path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
        assert conn.execute("SELECT count(*) FROM spool").fetchone()[0] == 5


def test_a_spool_from_a_newer_edgegw_is_refused_untouched(tmp_path: Path) -> None:
    cfg = spool_config(tmp_path)
    with sqlite3.connect(cfg.path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        conn.execute("CREATE TABLE future (x)")
    with pytest.raises(SpoolError, match="newer edgegw"):
        Spool.open(cfg)
    with sqlite3.connect(cfg.path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1


def test_lane_numbers_are_stable() -> None:
    # stored in every spool file: changing them would need a migration
    assert (Priority.EVENT, Priority.COMMAND, Priority.READING) == (0, 1, 2)
