"""The idle ticker's sleep (gateway/runtime.py): never longer than a timer a reading can
start, never past the next due timer. Pure: a compiled engine on a fake clock."""

from __future__ import annotations

from gateway.runtime import IDLE_TICK_S, LAG_LIMIT_S, TICK_S, _longest_quiet_sleep, _quiet_sleep, _starved
from rules import Now, RuleEngine
from tests.rules.helpers import START_WALL, one_rule, ruleset


def _engine(when: str, *, then: str = "") -> RuleEngine:
    return RuleEngine(ruleset(one_rule(when, then=then)), Now(0.0, START_WALL))


def test_without_short_timers_the_idle_sleep_is_the_cap() -> None:
    assert _longest_quiet_sleep(None) == IDLE_TICK_S
    assert _longest_quiet_sleep(_engine("{sensor: s/v, above: 1}")) == IDLE_TICK_S
    assert _longest_quiet_sleep(_engine("{sensor: s/v, above: 1, for: 1m}")) == IDLE_TICK_S


def test_a_short_for_or_stale_shortens_it_but_not_below_the_tick() -> None:
    assert _longest_quiet_sleep(_engine("{sensor: s/v, above: 1, for: 200ms}")) == 0.2
    assert _longest_quiet_sleep(_engine("{sensor: s/v, stale: 300ms}")) == 0.3
    assert _longest_quiet_sleep(_engine("{sensor: s/v, above: 1, for: 10ms}")) == TICK_S
    then = '      - set: a/out\n        to: {state: "on"}\n        for: 250ms\n        revert: {state: "off"}'
    assert _longest_quiet_sleep(_engine("{sensor: s/v, above: 1}", then=then)) == 0.25


def test_it_wakes_for_the_next_due_timer() -> None:
    engine = _engine("{sensor: s/v, stale: 1m}")  # a never-seen sensor: its stale timer is set
    due = engine.next_deadline()
    assert due is not None
    assert abs(_quiet_sleep(due - 0.1, engine, 0.5, []) - 0.1) < 1e-9
    assert _quiet_sleep(0.0, engine, 0.5, []) == 0.5
    assert abs(_quiet_sleep(10.0, None, 0.5, [10.2]) - 0.2) < 1e-9
    assert _quiet_sleep(10.0, None, 0.5, [9.0]) == 0.001  # overdue: at once (almost)


def test_a_backlog_drain_makes_room_only_while_readings_come_and_the_loop_was_idle() -> None:
    late, on_time = LAG_LIMIT_S * 2, LAG_LIMIT_S / 2
    # late while mostly idle with readings coming: other processes hold the CPU the rules need
    assert _starved(late, 0.001, 0.05, readings_flowing=True)
    assert not _starved(on_time, 0.001, 0.05, readings_flowing=True)
    # late because the loop itself was busy (our own burst): not the drain's fault
    assert not _starved(late, 0.04, 0.05, readings_flowing=True)
    # no reading coming: nothing to make room for, the drain goes at full speed
    assert not _starved(late, 0.0, 0.5, readings_flowing=False)
