"""The loop guard's fire history: exact up to a minute's 60 fires, in runs of a second above,
so a rule allowed thousands of fires a minute keeps a row of a minute's runs, not every fire."""

from __future__ import annotations

import json

from rules.loopguard import EXACT_LIMIT, FireLog
from rules.state import rule_entries
from tests.rules.helpers import one_rule, ruleset
from tests.rules.test_state import Restartable


def test_up_to_the_exact_limit_each_fire_leaves_the_minute_60_s_after_it() -> None:
    log = FireLog(EXACT_LIMIT)
    for t in (0.0, 0.25, 0.5):
        log.add(t)
    assert list(log.counts) == [1, 1, 1]
    assert log.in_last_minute(59.99) == 3
    assert log.in_last_minute(60.0) == 2
    assert log.in_last_minute(60.3) == 1
    assert log.in_last_minute(60.5) == 0


def test_above_it_fires_join_a_run_of_a_second_that_leaves_whole() -> None:
    log = FireLog(EXACT_LIMIT + 1)
    for i in range(500 * 120):  # 500 fires a second for two minutes
        t = i / 500
        log.in_last_minute(t)
        log.add(t)
    assert len(log.times) <= 61
    assert log.in_last_minute(119.99) == 500 * 60  # the runs that started at 60.0 ... 119.0
    assert log.in_last_minute(120.0) == 500 * 59  # the run that started at 60.0 left whole


def test_a_history_of_single_fires_loads_as_runs_with_the_same_count() -> None:
    """Rows written before runs hold one time per fire and no counts."""
    log = FireLog(10_000)
    log.load([i / 100 for i in range(3000)])  # 30 s at 100 a second
    assert log.total == 3000
    assert len(log.times) == 30
    exact = FireLog(EXACT_LIMIT)
    exact.load([1.0, 1.0, 2.0], [1, 1, 1])
    assert (list(exact.times), exact.total) == ([1.0, 1.0, 2.0], 3)


def _storm(box: Restartable, start: float, seconds: int, per_second: int) -> None:
    for i in range(seconds * per_second):
        t = start + i / per_second
        box.read(t, "s/v", 2 if i % 2 == 0 else 0)


def test_a_busy_rules_row_stays_small_and_a_restart_resumes_its_guard() -> None:
    """A rule crossing its threshold 50 times a second with a limit of 2,000 a minute: its
    row holds a minute's runs, not every fire, and after a restart the guard still counts
    the fires of the minute before it."""
    rule = one_rule("{sensor: s/v, above: 1}", "max_fires_per_minute: 2000")
    box = Restartable(ruleset(rule), via="rows")
    _storm(box, 0.0, 30, 100)  # 1,500 fires
    row = box.rows["rule:r"]
    assert sum(row["fire_counts"]) == 1500
    assert len(row["fires_ago"]) == 30
    assert len(json.dumps(row)) < 2000
    box.restart(downtime=5)
    _storm(box, 35.0, 20, 100)  # 500 more fit the minute, the other 500 are dropped
    fired = [entry for entry in box.log if entry[1] == "fired r"]
    assert len(fired) == 2000
    assert box.engine.rule("r").loop_trips == 500


def test_rule_rows_of_a_guard_up_to_the_exact_limit_carry_no_counts() -> None:
    box = Restartable(ruleset(one_rule("{sensor: s/v, above: 1}", "max_fires_per_minute: 3")))
    box.read(0, "s/v", 2)
    row = rule_entries(box.engine.rules, box.now())["rule:r"]
    assert "fire_counts" not in row
    assert len(row["fires_ago"]) == 1
