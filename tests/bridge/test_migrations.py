"""Upgrades: a spool written by the previous schema is migrated in place, nothing discarded."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest

from bridge.forwarder import Forwarder
from bridge.migrations import SCHEMA_V1, SCHEMA_VERSION
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
