"""The stores (SQLite and a real PostgreSQL): a batch's changes and offsets in one transaction,
fenced offsets, state reload, retention."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet.errors import StaleOffsetsError
from fleet.projection import Projector
from fleet.schemas import Validators
from fleet.sqlite import SqliteStore
from fleet.store import Store
from tests.fleet.events import beat, command, reading, rule

VALIDATORS = Validators.from_folder()


def rows(store: Store, sql: str) -> list[dict[str, object]]:
    reader = store.reader()
    try:
        return reader.rows(sql)
    finally:
        reader.close()


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        opened: Store = SqliteStore(tmp_path / "fleet.db")
    else:
        from fleet.postgres import PostgresStore  # noqa: PLC0415 - psycopg only for this case

        opened = PostgresStore(request.getfixturevalue("pg_url"))
    yield opened
    opened.close()


def test_two_batches_add_up_and_the_state_reloads(store: Store) -> None:
    p = Projector(VALIDATORS, offline_after=180.0)
    store.commit(
        p.apply([beat(100.0), reading("t1", 20.0, 100.0, seq=1), rule("fired", "hot", 100.0, seq=2)]),
        {("edgegw.readings", 0): (None, 3)},
    )
    store.commit(
        p.apply(
            [
                reading("t1", 22.0, 110.0, seq=3),
                reading("t1", 18.0, 90.0, seq=4),
                command("lamp/set", {"on": True}, 111.0, seq=5),
            ]
        ),
        {("edgegw.readings", 0): (3, 6)},
    )
    assert rows(store, "SELECT readings, last_seen FROM devices") == [{"readings": 3, "last_seen": 110.0}]
    assert rows(store, "SELECT value FROM last_values") == [{"value": "22.0"}]
    assert rows(store, "SELECT n, min, max, sum FROM rollups") == [
        {"n": 3, "min": 18.0, "max": 22.0, "sum": 60.0}
    ]
    assert rows(store, "SELECT online, heartbeats FROM gateways") == [{"online": 1, "heartbeats": 1}]
    assert rows(store, "SELECT fires FROM rules") == [{"fires": 1}]
    assert rows(store, "SELECT outcome FROM commands") == [{"outcome": "sent"}]
    state = store.load()
    assert state.offsets == {("edgegw.readings", 0): 6}
    assert state.high_water == {
        ("gw1/spool1", "edgegw.readings", "t1"): 4,
        ("gw1/spool1", "edgegw.events", "rules/hot"): 2,
        ("gw1/spool1", "edgegw.commands", "lamp"): 5,
    }
    assert state.gateways["gw1"].last_heartbeat == 100.0


def test_a_stale_offset_rolls_the_whole_batch_back(store: Store) -> None:
    p = Projector(VALIDATORS, offline_after=180.0)
    store.commit(p.apply([reading("t1", 20.0, 100.0, seq=1)]), {("edgegw.readings", 0): (None, 1)})
    with pytest.raises(StaleOffsetsError):
        store.commit(p.apply([reading("t1", 21.0, 101.0, seq=2)]), {("edgegw.readings", 0): (0, 2)})
    assert rows(store, "SELECT readings FROM devices") == [{"readings": 1}]
    assert store.load().offsets == {("edgegw.readings", 0): 1}


def test_prune_drops_rollups_past_retention(store: Store) -> None:
    p = Projector(VALIDATORS, offline_after=180.0)
    store.commit(p.apply([reading("t1", 1.0, 3600.0, seq=1), reading("t1", 1.0, 7 * 3600.0, seq=2)]), {})
    assert store.prune(5 * 3600.0) == 1
    assert rows(store, "SELECT hour FROM rollups") == [{"hour": 7 * 3600}]
