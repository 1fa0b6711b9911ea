"""Time batching of spool commits at low rates: the pacing policy (pure, with a fake
clock) and the real spool's writer thread (commit counts, never wall time)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from bridge.config import SpoolConfig
from bridge.spool import Spool
from bridge.writer import CommitPacer
from tests.bridge.helpers import readings, spool_config


def _pacer_at(rate: float, *, interval: float = 0.002, delay: float = 0.1, batch: int = 256,
              batch_acks: int = CommitPacer.ACKS_PER_GROUP) -> CommitPacer:  # fmt: skip
    """A pacer whose recent rate is ``rate`` rows/s (fed through ``committed``, fake clock)."""
    pacer = CommitPacer(interval, delay, batch, batch_acks)
    now = 1000.0
    pacer.committed(0, now)
    rows = int(rate * CommitPacer.RATE_PERIOD_S)
    pacer.committed(rows, now + CommitPacer.RATE_PERIOD_S)
    assert abs(pacer.rate - rate) < 1
    return pacer


def _acks(n: int) -> tuple[Callable[[], None], threading.Event, list[int]]:
    """An on_durable that counts its calls; the event is set at the ``n``-th."""
    done = threading.Event()
    acked: list[int] = []

    def ack() -> None:
        acked.append(1)
        if len(acked) == n:
            done.set()

    return ack, done, acked


def test_a_trickle_gathers_until_the_delay() -> None:
    pacer = _pacer_at(100.0)
    assert pacer.low_rate
    # after the 2 ms window one row is in: nap for about 4 rows' worth (40 ms at 100/s)
    assert abs(pacer.gather_on(1, first_at=10.0, now=10.002, napped_at_rows=None) - 0.04) < 1e-9
    # the nap brought rows: nap again, but never past the delay (10.0 + 0.1)
    assert abs(pacer.gather_on(5, first_at=10.0, now=10.08, napped_at_rows=1) - 0.02) < 1e-9
    # the delay is over: commit
    assert pacer.gather_on(9, first_at=10.0, now=10.1, napped_at_rows=5) == 0.0


def test_a_full_batch_commits_at_once() -> None:
    pacer = _pacer_at(100.0)
    assert pacer.gather_on(256, first_at=10.0, now=10.002, napped_at_rows=None) == 0.0


def test_a_nap_that_brought_nothing_ends_the_wait() -> None:
    """A sender that stopped, or a broker whose in-flight window waits for these PUBACKs:
    the group is committed, not held for the rest of the delay."""
    pacer = _pacer_at(100.0)
    assert pacer.gather_on(20, first_at=10.0, now=10.042, napped_at_rows=20) == 0.0


def test_a_brokers_in_flight_window_is_never_held_whole() -> None:
    """16 QoS 1 messages wait for their PUBACK: commit now. Mosquitto sends no more than 20
    unacknowledged messages (its default window); holding them all would stall ingest."""
    pacer = _pacer_at(100.0)
    assert pacer.gather_on(15, first_at=10.0, now=10.002, napped_at_rows=None, acks=15) > 0
    assert pacer.gather_on(16, first_at=10.0, now=10.002, napped_at_rows=None, acks=16) == 0.0


def test_a_high_rate_gathers_its_batch_for_up_to_a_tenth_of_a_second() -> None:
    """At 5k rows/s a group used to be what queued while the last one committed (~18 rows,
    ~280 commits a second); it gathers its 256 rows (~51 ms), napping 10 ms at a time, not
    waking every 2 ms window."""
    pacer = _pacer_at(5000.0, delay=2.0, batch_acks=500)
    assert not pacer.low_rate
    assert pacer.delay == CommitPacer.FILL_S
    assert pacer.gather_on(10, first_at=10.0, now=10.002, napped_at_rows=None) == CommitPacer.MIN_NAP
    assert pacer.gather_on(200, first_at=10.0, now=10.04, napped_at_rows=150) > 0
    assert pacer.gather_on(256, first_at=10.0, now=10.05, napped_at_rows=200) == 0.0
    assert pacer.gather_on(250, first_at=10.0, now=10.1, napped_at_rows=200) == 0.0


def test_with_a_narrow_window_a_high_rate_commits_after_the_interval() -> None:
    """MQTT 3.1.1: a group ends at 16 messages of Mosquitto's window of 20; gathered at 5k/s
    it would hold most of the window, and the readings behind it (the rules they fire)
    would wait at the broker. A house's rate still gathers, with the naps it always had."""
    pacer = _pacer_at(5000.0, delay=2.0)
    assert not pacer.wide
    assert pacer.gather_on(10, first_at=10.0, now=10.002, napped_at_rows=None, acks=10) == 0.0
    house = _pacer_at(1000.0, delay=2.0)
    assert abs(house.gather_on(5, first_at=10.0, now=10.002, napped_at_rows=None, acks=5) - 0.004) < 1e-9


def test_side_rows_while_a_few_dozen_commits_a_second() -> None:
    pacer = _pacer_at(5000.0, delay=2.0)
    assert pacer.side_rows  # 5000 rows in 2 commits over the half second
    busy = CommitPacer(0.002, 2.0, 256)
    busy.committed(0, 0.0)
    for i in range(1, 301):  # 600 commits a second (16-message groups at 10k/s)
        busy.committed(16, i / 600)
    assert busy.commit_rate > CommitPacer.SIDE_COMMITS
    assert not busy.side_rows


def test_a_longer_delay_makes_a_trickles_groups_larger_not_time_batching_reach_higher_rates() -> None:
    """The defaults: a 1 s delay and 256 rows. At 100/s a group gathers for the second; at
    1,000/s for 0.1 s at most (larger groups held the event loop's GIL in longer bursts);
    at 5,000/s until its 256 rows (within 100 ms)."""
    house = _pacer_at(100.0, delay=1.0)
    assert house.low_rate
    assert abs(house.gather_on(90, first_at=10.0, now=10.98, napped_at_rows=86) - 0.02) < 1e-9  # up to 11.0
    assert house.gather_on(256, first_at=10.0, now=10.3, napped_at_rows=None) == 0.0
    busy = _pacer_at(1000.0, delay=1.0)  # 256 rows in 0.256 s: gathers for 0.1 s at most, as before
    assert busy.low_rate
    assert busy.gather_on(60, first_at=10.0, now=10.06, napped_at_rows=56) > 0
    assert busy.gather_on(100, first_at=10.0, now=10.1, napped_at_rows=96) == 0.0
    assert not _pacer_at(5000.0, delay=1.0).low_rate


def test_a_delay_over_a_second_makes_a_houses_groups_larger_and_moves_no_edge() -> None:
    """The default delay is 2 s (SD-card wear). A trickle gathers for the 2 s; a house at
    200 rows/s gathers up to its 256 rows (1.28 s), not for 0.1 s as if 2 s made 256 rows
    a busy rate (that edge stays at 256 rows/s); 1,000 rows/s gathers for 0.1 s as before."""
    assert SpoolConfig(path=Path("x.db")).commit_max_delay == 2.0
    trickle = _pacer_at(120.0, delay=2.0)
    assert trickle.gather_on(200, first_at=10.0, now=11.9, napped_at_rows=195) > 0  # up to 12.0
    house = _pacer_at(200.0, delay=2.0)
    assert house.delay == 2.0
    assert house.gather_on(200, first_at=10.0, now=11.0, napped_at_rows=195) > 0
    assert house.gather_on(256, first_at=10.0, now=11.28, napped_at_rows=250) == 0.0
    busy = _pacer_at(1000.0, delay=2.0)
    assert busy.delay == CommitPacer.FILL_S
    assert busy.gather_on(100, first_at=10.0, now=10.1, napped_at_rows=96) == 0.0


def test_no_rate_yet_naps_briefly_then_gathers_while_rows_come() -> None:
    """No rate yet (or a quiet spell): a short nap, so that a lone event (a command's
    answer after an hour of nothing) is not held for the whole delay; a trickle that
    began keeps coming in the nap, and the group gathers on."""
    pacer = CommitPacer(0.002, 1.0, 256)
    nap = pacer.gather_on(1, first_at=10.0, now=10.002, napped_at_rows=None)
    assert abs(nap - CommitPacer.QUIET_NAP) < 1e-9
    assert pacer.gather_on(1, first_at=10.0, now=10.022, napped_at_rows=1) == 0.0  # nothing came: commit
    assert pacer.gather_on(7, first_at=10.0, now=10.022, napped_at_rows=1) > 0  # a trickle: gather on
    pacer.committed(0, 100.0)
    pacer.committed(1, 102.0)  # one row in two seconds: under one per delay, the same short nap
    assert pacer.rate == 0.5
    nap = pacer.gather_on(1, first_at=10.0, now=10.002, napped_at_rows=None)
    assert abs(nap - CommitPacer.QUIET_NAP) < 1e-9


def test_a_delay_no_longer_than_the_interval_turns_it_off() -> None:
    pacer = CommitPacer(0.002, 0.0, 256)
    assert pacer.gather_on(1, first_at=10.0, now=10.002, napped_at_rows=None) == 0.0
    pacer = CommitPacer(0.05, 0.05, 256)
    assert not pacer.low_rate


def test_a_group_holding_its_qos1_messages_commits_without_gathering_on() -> None:
    """16 by default (under Mosquitto's default in-flight window of 20); configurable for a
    broker with a larger window (commit_batch_acks)."""
    pacer = CommitPacer(0.002, 1.0, 256)
    assert pacer.gather_on(16, first_at=10.0, now=10.002, napped_at_rows=None, acks=16) == 0.0
    pacer = CommitPacer(0.002, 1.0, 256, batch_acks=100)
    pacer.committed(0, 0.0)
    pacer.committed(50, 0.5)  # 100 rows/s
    assert pacer.gather_on(16, first_at=10.0, now=10.002, napped_at_rows=None, acks=16) > 0


def test_the_rate_follows_the_commits() -> None:
    pacer = CommitPacer(0.002, 0.1, 256)
    pacer.committed(10, 0.0)
    pacer.committed(10, 0.2)  # less than a period: no estimate yet
    assert pacer.rate == 0.0
    pacer.committed(30, 0.5)
    assert pacer.rate == 100.0  # 10 + 10 + 30 rows over 0.5 s
    pacer.committed(0, 60.5)  # a minute of nothing
    assert pacer.rate == 0.0


def test_the_spool_commits_a_trickle_in_few_groups(tmp_path: Path) -> None:
    """Single-reading batches a few milliseconds apart (faster than the delay) share
    commits; every on_durable still runs, after its commit."""
    spool = Spool.open(spool_config(tmp_path, commit_max_delay="1s", commit_batch_rows=1000))
    ack, done, _ = _acks(20)
    for i in range(20):
        spool.submit(readings(1, start=i), ack)
        time.sleep(0.003)  # longer than commit_interval: without pacing, a commit each
    assert done.wait(30)
    stats = spool.stats()
    assert stats.committed_rows == 20
    assert stats.commits < 20, stats  # a nap may end a group early on a slow machine, not 20 times
    spool.close()


def test_a_flush_does_not_wait_for_the_delay(tmp_path: Path) -> None:
    """Someone waits on a flush, an append_many or a close: its group is committed after
    the interval window, and it ends a nap already begun."""
    spool = Spool.open(spool_config(tmp_path, commit_max_delay="1s", commit_batch_rows=100_000))
    spool.submit(readings(3))
    spool.flush(timeout=5)
    assert spool.stats().committed_rows == 3
    spool.append_many(readings(2, start=3), timeout=5)
    spool.close(timeout=5)
    assert not spool.writer_alive


def test_a_burst_after_a_quiet_spell_ends_the_nap_once_its_group_is_full(tmp_path: Path) -> None:
    """The nap is sized from the recent rate: after a trickle of one row in 4 s it lasts
    8 s. A burst of QoS 1 messages that fills the group's share of the broker's window
    (``commit_batch_acks``) within it is committed at once, not after the nap: until then
    the broker holds back the readings behind the window, and the rules they fire (a 5k/s
    burst after an idle spell waited 0.3-1 s here)."""
    spool = Spool.open(spool_config(tmp_path, commit_max_delay="10s", commit_batch_rows=1000,
                                    commit_batch_acks=16))  # fmt: skip
    spool.append_many(readings(1), timeout=5)
    time.sleep(4.0)
    spool.append_many(readings(1, start=1), timeout=5)  # the recent rate: 2 rows in 4 s
    ack, done, acked = _acks(16)
    for i in range(16):
        spool.submit(readings(1, start=2 + i), ack, marks=[(i + 1, i)])
        time.sleep(0.005)  # past the commit_interval window: the writer naps on the first
    assert done.wait(4.0), f"{len(acked)} of 16 acknowledged within 4 s: the writer slept out its nap"
    spool.close(timeout=5)
