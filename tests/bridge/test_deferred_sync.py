"""Deferred syncs: on a wide MQTT window (MQTT 5) a few commits share one fdatasync of the
WAL. The policy is pure (fake clock); the writer and the reader are run on a real spool
file, and the threaded spool is checked for order (an ``on_durable`` never runs before the
sync that covers its rows), never for wall time."""

from __future__ import annotations

import functools
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from bridge.config import SpoolConfig
from bridge.policy import PRIORITY_OF_KIND
from bridge.spool import Spool, SpoolReader
from bridge.store import Store
from bridge.writer import CommitPacer, GroupWriter, Rebase, Submit
from tests.bridge.helpers import readings, spool_config

WIDE = {"commit_max_delay": "2s", "commit_batch_rows": 256, "commit_batch_acks": 500}
"""The spool settings ``edgegw run`` takes on MQTT 5 (``receive_maximum`` 1000)."""


def _pacer_at(rate: float, *, acks: int = 500, delay: float = 2.0) -> CommitPacer:
    pacer = CommitPacer(0.002, delay, 256, acks)
    pacer.committed(0, 1000.0)
    pacer.committed(int(rate * CommitPacer.RATE_PERIOD_S), 1000.0 + CommitPacer.RATE_PERIOD_S)
    return pacer


# ---------------------------------------------------------------------- the policy (pure)
def test_only_a_wide_window_defers_syncs() -> None:
    assert _pacer_at(1000).defers_sync
    assert not _pacer_at(1000, acks=16).defers_sync  # MQTT 3.1.1: 16 of Mosquitto's 20
    assert not _pacer_at(1000, delay=0.0).defers_sync  # time batching off


def test_at_1k_per_second_three_commits_share_a_sync() -> None:
    """Groups of 0.1 s, ~100 QoS 1 messages each: a sync once one more group could take the
    messages waiting for their PUBACK past half the broker's window (500 of 1000)."""
    pacer = _pacer_at(1000)
    assert pacer.delay < CommitPacer.SYNC_S
    assert not pacer.sync_due(100, held_since=10.0, now=10.1, stalled=False)
    assert not pacer.sync_due(200, held_since=10.0, now=10.2, stalled=False)
    assert pacer.sync_due(300, held_since=10.0, now=10.3, stalled=False)


def test_a_sync_within_half_a_second_and_at_once_when_the_sender_stops() -> None:
    pacer = _pacer_at(1000)
    assert not pacer.sync_due(0, held_since=10.0, now=10.49, stalled=False)  # QoS 0: time only
    assert pacer.sync_due(0, held_since=10.0, now=10.5, stalled=False)
    assert pacer.sync_due(10, held_since=10.0, now=10.01, stalled=True)  # a nap brought nothing


def test_a_house_syncs_every_commit() -> None:
    """At 100 readings/s a group gathers up to 2 s already: it is synced at once."""
    pacer = _pacer_at(100)
    assert pacer.delay >= CommitPacer.SYNC_S
    assert pacer.sync_due(1, held_since=10.0, now=10.0, stalled=False)


def test_held_commits_wait_for_a_few_expected_arrivals_then_sync() -> None:
    pacer = _pacer_at(1000)
    assert pacer.hold_wait(held_since=10.0, now=10.1) == pytest.approx(CommitPacer.QUIET_NAP)
    assert pacer.hold_wait(held_since=10.0, now=10.49) == pytest.approx(0.01)
    assert pacer.hold_wait(held_since=10.0, now=10.6) == 0.0


# ---------------------------------------------------------------------- writer and reader, one file
def _rows(reader: SpoolReader) -> list[int]:
    return sorted(r[0] for lane in set(PRIORITY_OF_KIND.values()) for r in reader.fetch_raw(lane, 0, 10_000))


def _deferred(tmp_path: Path) -> tuple[SpoolConfig, Store, GroupWriter]:
    config = spool_config(tmp_path, **WIDE)
    store = Store(config)
    store.defer_sync()
    lanes = {int(k): int(v) for k, v in PRIORITY_OF_KIND.items()}
    return config, store, GroupWriter(store, config, lanes, time.time)


def test_a_held_commit_is_in_the_file_but_no_reader_ships_it_before_the_sync(tmp_path: Path) -> None:
    config, store, writer = _deferred(tmp_path)
    durable: list[int] = []
    first = Submit(readings(5), lambda: durable.append(first.last_seq), marks=[(1, 11), (2, 22)])
    writer.group([first])
    second = Submit(readings(3, start=5), lambda: durable.append(second.last_seq), marks=[(3, 33)])
    writer.group([second])
    shipping = SpoolReader(config.path, horizon=lambda: writer.durable_seq)
    everything = SpoolReader(config.path)
    try:
        assert len(_rows(everything)) == 8  # committed: a killed process would keep them
        assert _rows(shipping) == []  # not synced: a power cut may take them, so nothing ships
        assert durable == []  # and no PUBACK left
        assert (writer.held_acks, len(writer.held)) == (3, 2)
        writer.sync()
        assert durable == [first.last_seq, second.last_seq]
        assert _rows(shipping) == _rows(everything)
        assert writer.durable_seq == store.committed_seq
        assert writer.data_ready.is_set()
        assert (writer.held, writer.held_acks, writer.held_since) == ([], 0, None)
    finally:
        shipping.close()
        everything.close()
        store.close()


def test_a_failed_writer_voids_the_held_batches(tmp_path: Path) -> None:
    _, store, writer = _deferred(tmp_path)
    voided: list[str] = []
    batch = Submit(readings(2), lambda: voided.append("durable"), on_void=lambda: voided.append("void"))
    writer.group([batch])
    voids = writer.take_held()
    assert (len(voids), writer.held, writer.held_since) == (1, [], None)
    voids[0]()  # the spool calls them when its writer fails: the broker sends the messages again
    assert voided == ["void"]
    store.close()


# ---------------------------------------------------------------------- the spool's writer thread
def test_the_spool_acknowledges_only_what_a_sync_covered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """~1k readings/s in single-message batches for 1.5 s, as MQTT 5 delivers them: fewer
    syncs than commits, and every ``on_durable`` after a sync that covered its rows."""
    synced: list[int] = []
    real = Store.sync_wal

    def sync_wal(self: Store, *, required: bool = False) -> None:
        real(self, required=required)
        synced.append(getattr(self, "committed_seq", 0))  # 0: the sync at open

    monkeypatch.setattr(Store, "sync_wal", sync_wal)
    spool = Spool.open(spool_config(tmp_path, **WIDE))
    late: list[tuple[int, int]] = []
    acked = threading.Event()
    count = 1500
    ops: list[Submit] = []

    def ack(i: int) -> None:
        covered = synced[-1] if synced else 0
        if ops[i].last_seq >= covered:
            late.append((ops[i].last_seq, covered))
        if i == count - 1:
            acked.set()

    started = time.monotonic()
    for i in range(count):
        ops.append(spool.submit(readings(1, start=i), functools.partial(ack, i), marks=[(i % 65535 + 1, i)]))
        time.sleep(max(0.0, started + (i + 1) / 1000 - time.monotonic()))
    assert acked.wait(30)
    stats: Any = spool.stats()
    syncs = len(synced) - 1  # the one at open
    spool.close()
    assert stats.committed_rows == count
    assert late == []
    assert 0 < syncs < stats.commits, (syncs, stats.commits)
    assert stats.syncs == syncs  # edgegw_spool_syncs_total


def test_a_rebase_is_synced_before_anyone_ships_by_the_new_numbers(tmp_path: Path) -> None:
    """The spool came back older than Kafka's checkpoint: the rows of this run are
    renumbered above it. The renumbering is on disk before the rebase is done, or a cut
    could bring back the old numbers after rows were shipped by the new ones."""
    config, store, writer = _deferred(tmp_path)
    writer.group([Submit(readings(5), None)])
    writer.sync()
    store.close()
    config, store, writer = _deferred(tmp_path)  # this run begins at sequence 6
    writer.group([Submit(readings(5, start=5), None)])  # 6..10, held
    rebase = Rebase(20)
    done_at_sync: list[bool] = []
    real = store.sync_wal

    def sync_wal(*, required: bool = False) -> None:
        done_at_sync.append(rebase.done.is_set())
        real(required=required)

    store.sync_wal = sync_wal  # type: ignore[method-assign]
    writer.group([rebase])
    shipping = SpoolReader(config.path, horizon=lambda: writer.durable_seq)
    try:
        assert rebase.moved == 5
        assert done_at_sync == [False]  # synced, then done
        assert writer.durable_seq == store.committed_seq == 26
        assert _rows(shipping) == [1, 2, 3, 4, 5, 21, 22, 23, 24, 25]
    finally:
        shipping.close()
        store.close()


def test_a_failed_sync_fails_the_spool_and_voids_what_it_held(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An I/O error on the fdatasync: no PUBACK leaves for the batch (its message comes
    again), and the spool reports the failure (the runtime reopens it, /healthz says so)."""
    real = Store.sync_wal

    def sync_wal(self: Store, *, required: bool = False) -> None:
        if required:
            raise OSError(5, "Input/output error")
        real(self, required=required)

    monkeypatch.setattr(Store, "sync_wal", sync_wal)
    spool = Spool.open(spool_config(tmp_path, **WIDE))
    outcome: list[str] = []
    ended = threading.Event()

    def note(what: str) -> None:
        outcome.append(what)
        ended.set()

    spool.submit(readings(3), functools.partial(note, "durable"), on_void=functools.partial(note, "void"),
                 marks=[(1, 11)])  # fmt: skip
    assert ended.wait(30)
    assert outcome == ["void"]
    assert spool.failed is not None
    assert "Input/output error" in str(spool.failed)
    spool.close()
