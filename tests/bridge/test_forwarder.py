"""The forwarder's logic on an in-memory uplink: lanes, order, checkpoints, dead letters, backoff."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from bridge.checkpoint import Checkpoint
from bridge.config import TopicsConfig
from bridge.envelope import RawRow
from bridge.forwarder import Forwarder, SendResult
from bridge.policy import Priority
from bridge.spool import Spool
from common.backoff import Backoff
from gateway.model import Event, EventKind
from tests.bridge.helpers import FakeUplink, readings, spool_config

TOPICS = TopicsConfig(readings="r", events="e", commands="c", heartbeats="hb", checkpoints="cp")


def _forwarder(spool: Spool, uplink: FakeUplink, **kw: object) -> Forwarder:
    return Forwarder(
        spool,
        uplink.factory,
        gateway_id="gw-1",
        topic_of_kind=TOPICS.of_kind(),
        heartbeat_topic=kw.pop("heartbeat_topic", None),  # type: ignore[arg-type]
        exactly_once=kw.pop("exactly_once", True),  # type: ignore[arg-type]
        batch_rows=kw.pop("batch_rows", 100),  # type: ignore[arg-type]
        backoff=Backoff(0.01, 0.05),
        linger=kw.pop("linger", 0.0),  # type: ignore[arg-type]
        busy=kw.pop("busy", None),  # type: ignore[arg-type]
    )


def _drain(forwarder: Forwarder, spool: Spool) -> None:
    reader = spool.reader()
    while forwarder.step(reader.fetch):
        pass
    spool.flush()


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Spool]:
    s = Spool.open(spool_config(tmp_path))
    yield s
    s.close()


def test_events_drain_before_readings_and_each_device_stays_in_order(spool: Spool) -> None:
    t = 1_800_000_000.0
    spool.append_many(readings(250, devices=5))
    spool.append_many([Event(EventKind.FIRED, "hot", t), Event(EventKind.CLEARED, "hot", t + 1)])
    uplink = FakeUplink()
    forwarder = _forwarder(spool, uplink, batch_rows=100)
    _drain(forwarder, spool)
    topics = [m.topic for m in uplink.committed]
    assert topics[:2] == ["e", "e"], "rule events first, though spooled last"
    assert len(topics) == 252
    for dev in range(5):
        values = [v["value"] for v in uplink.values("r") if v["device_id"] == f"dev-{dev}"]
        assert values == sorted(values)
    assert spool.stats().depth == 0
    assert uplink.checkpoint is not None
    assert uplink.checkpoint.lanes == {Priority.EVENT: 252, Priority.READING: 250}
    assert forwarder.stats().shipped == 252


def test_a_restart_drops_what_the_checkpoint_covers(tmp_path: Path) -> None:
    first = Spool.open(spool_config(tmp_path))
    first.append_many(readings(10))
    first.close()
    # the restart: Kafka already has rows 1..6 of this spool (the gateway died before deleting them)
    spool = Spool.open(spool_config(tmp_path))
    uplink = FakeUplink(checkpoint=Checkpoint("gw-1", spool.spool_id, {Priority.READING: 6}))
    _drain(_forwarder(spool, uplink), spool)
    spool.close()
    assert [m.seq for m in uplink.committed] == [7, 8, 9, 10]


def test_rows_of_this_run_under_the_checkpoint_are_renumbered_not_swallowed(spool: Spool) -> None:
    """The spool came back from a power cut older than Kafka's checkpoint (issue 17): rows
    written since it was opened must not be taken for shipped."""
    spool.append_many(readings(10))
    uplink = FakeUplink(checkpoint=Checkpoint("gw-1", spool.spool_id, {Priority.READING: 6}))
    _drain(_forwarder(spool, uplink), spool)
    assert [m.seq for m in uplink.committed] == list(range(7, 17))  # all ten, above the checkpoint


def test_a_checkpoint_of_another_spool_file_is_ignored(spool: Spool) -> None:
    spool.append_many(readings(3))
    uplink = FakeUplink(checkpoint=Checkpoint("gw-1", "someotherfile", {Priority.READING: 100}))
    _drain(_forwarder(spool, uplink), spool)
    assert [m.seq for m in uplink.committed] == [1, 2, 3]


def test_a_refused_record_goes_to_dead_letters_and_never_stalls_the_rest(spool: Spool) -> None:
    spool.append_many(readings(20))
    uplink = FakeUplink(refuse_seqs={5})
    forwarder = _forwarder(spool, uplink)
    with capture_logs() as logs:
        _drain(forwarder, spool)
    assert [m.seq for m in uplink.committed] == [s for s in range(1, 21) if s != 5]
    assert spool.stats().dead_letters == 1
    assert forwarder.stats().dead_lettered == 1
    assert any(e["event"] == "spool: row moved to dead letters" and e["seq"] == 5 for e in logs)


def test_at_least_once_deletes_on_ack_and_dead_letters_too(spool: Spool) -> None:
    spool.append_many(readings(20))
    uplink = FakeUplink(refuse_seqs={3}, exactly_once=False)
    forwarder = _forwarder(spool, uplink, exactly_once=False)
    _drain(forwarder, spool)
    assert [m.seq for m in uplink.committed] == [s for s in range(1, 21) if s != 3]
    assert uplink.checkpoint is None
    assert spool.stats().depth == 0
    assert spool.stats().dead_letters == 1


def test_failures_back_off_then_the_backlog_drains_exactly_once(spool: Spool) -> None:
    spool.append_many(readings(500))
    uplink = FakeUplink(connect_failures=3, send_failures=2)
    forwarder = _forwarder(spool, uplink, batch_rows=50)
    with capture_logs() as logs:
        forwarder.start()
        deadline = time.monotonic() + 20
        while forwarder.stats().shipped < 500 and time.monotonic() < deadline:
            time.sleep(0.01)
        forwarder.stop()
    assert [m.seq for m in uplink.committed] == list(range(1, 501))
    assert uplink.connects >= 6
    assert any(e["event"] == "uplink unavailable" for e in logs)
    stats = forwarder.stats()
    assert stats.state == "stopped"


def test_heartbeat_carries_spool_depth_and_versions(spool: Spool) -> None:
    spool.append_many(readings(3))
    uplink = FakeUplink()
    forwarder = _forwarder(spool, uplink, heartbeat_topic="hb", batch_rows=2)
    reader = spool.reader()
    assert forwarder.step(reader.fetch)
    beats = [m for m in uplink.committed if m.topic == "hb"]
    assert len(beats) == 1
    data = json.loads(beats[0].value)
    assert data["gateway_id"] == "gw-1"
    assert data["spool"]["depth"] == 3
    assert data["versions"]["edgegw"]
    forwarder.step(reader.fetch)
    assert len([m for m in uplink.committed if m.topic == "hb"]) == 1  # one per interval


def test_stats_report_backlog_size_and_age(spool: Spool) -> None:
    spool.append_many(readings(7))
    forwarder = _forwarder(spool, FakeUplink())
    stats = forwarder.stats()
    assert stats.backlog_rows == 7
    assert stats.backlog_bytes > 7 * 100
    assert stats.backlog_oldest_age is not None
    assert stats.state == "starting"


def test_a_refused_heartbeat_never_blocks_the_data(spool: Spool) -> None:
    class RefusesHeartbeats(FakeUplink):
        def send(self, messages, checkpoint):  # type: ignore[no-untyped-def]
            for i, m in enumerate(messages):
                if m.seq is None:
                    return SendResult(permanent={i: ("topic_authorization_failed", "not authorised")})
            return super().send(messages, checkpoint)

    spool.append_many(readings(10))
    uplink = RefusesHeartbeats()
    forwarder = _forwarder(spool, uplink, heartbeat_topic="hb")
    with capture_logs() as logs:
        _drain(forwarder, spool)
    assert [m.seq for m in uplink.committed] == list(range(1, 11))
    assert any(e["event"] == "heartbeat refused by Kafka" for e in logs)


def _ship_all(forwarder: Forwarder, count: int) -> None:
    forwarder.start()
    deadline = time.monotonic() + 20
    while forwarder.stats().shipped < count and time.monotonic() < deadline:
        time.sleep(0.01)
    forwarder.stop()


@pytest.mark.parametrize("late", [False, True])
def test_a_backlog_pauses_between_rounds_only_while_the_local_path_is_late(spool: Spool, late: bool) -> None:
    spool.append_many(readings(500))
    uplink = FakeUplink()
    forwarder = _forwarder(spool, uplink, batch_rows=50, busy=lambda: late)
    _ship_all(forwarder, 500)
    assert [m.seq for m in uplink.committed] == list(range(1, 501))  # all of it, in order, either way
    assert forwarder.stats().yields == (10 if late else 0)  # ten full rounds of 50


def test_a_trickle_waits_for_the_linger_and_goes_in_one_transaction(spool: Spool) -> None:
    uplink = FakeUplink()
    forwarder = _forwarder(spool, uplink, linger=1.0)
    spool.append_many(readings(1))
    forwarder.start()
    deadline = time.monotonic() + 10
    while not uplink.committed and time.monotonic() < deadline:
        time.sleep(0.005)
    for r in readings(20)[1:]:  # 19 more, one at a time, well inside the linger
        spool.append_many([r])
    while forwarder.stats().shipped < 20 and time.monotonic() < deadline:
        time.sleep(0.01)
    forwarder.stop()
    assert forwarder.stats().shipped == 20
    assert forwarder.stats().transactions == 2  # the first row at once, the other 19 together


@pytest.mark.parametrize("heartbeat_topic", [None, "hb"])
def test_an_idle_forwarder_sleeps_until_data_arrives(
    spool: Spool, monkeypatch: pytest.MonkeyPatch, heartbeat_topic: str | None
) -> None:
    """Issue 11: with no heartbeat topic the idle wait was 0 s, a busy loop at one core."""
    forwarder = _forwarder(spool, FakeUplink(), heartbeat_topic=heartbeat_topic)
    rounds = 0
    step = forwarder.step

    def counted(fetch: Callable[[int, int, int], Sequence[RawRow]]) -> bool:
        nonlocal rounds
        rounds += 1
        return step(fetch)

    monkeypatch.setattr(forwarder, "step", counted)
    forwarder.start()
    try:
        deadline = time.monotonic() + 10
        while forwarder.stats().state != "up" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert forwarder.stats().state == "up"
        before = rounds
        time.sleep(0.3)  # an idle spell: nothing spooled, no heartbeat due
        idle_rounds = rounds - before
        spool.append_many(readings(1))  # and data still wakes it at once
        while forwarder.stats().shipped < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        forwarder.stop()
    assert idle_rounds <= 2, f"{idle_rounds} fetch rounds while idle: the forwarder spins"
    assert forwarder.stats().shipped == 1
