"""The spool policy, pure: overflow (cap, priorities), TTL, redelivery window."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.policy import (
    Kind,
    OverflowPlan,
    Priority,
    RowMeta,
    Usage,
    apply_overflow,
    expired_prefix,
    lane_priorities,
    overflow_plan,
)


def _usage(rows: list[RowMeta]) -> dict[int, Usage]:
    out: dict[int, Usage] = {}
    for r in rows:
        u = out.get(r.prio, Usage())
        out[r.prio] = Usage(u.rows + 1, u.bytes + r.size)
    return out


@pytest.mark.parametrize(
    ("usage", "incoming", "cap", "stored", "batch"),
    [
        ({2: Usage(10, 1000)}, {2: 100}, 2000, {}, {}),  # fits
        ({2: Usage(10, 1000)}, {2: 100}, 1000, {2: 100}, {}),  # oldest readings make room
        ({0: Usage(1, 500), 2: Usage(5, 500)}, {0: 600}, 1000, {2: 500, 0: 100}, {}),
        ({0: Usage(10, 1000)}, {2: 100}, 1000, {}, {2: 100}),  # readings into a spool full of events
        ({0: Usage(1, 100)}, {2: 5000}, 1000, {}, {2: 4100}),  # a batch larger than the cap
        ({}, {0: 50, 1: 50, 2: 50}, 100, {}, {2: 50}),
    ],
)
def test_overflow_drops_lowest_priority_oldest_first(
    usage: dict[int, Usage], incoming: dict[int, int], cap: int, stored: dict[int, int], batch: dict[int, int]
) -> None:
    plan = overflow_plan(usage, incoming, cap)
    assert plan == OverflowPlan(stored, batch)


rows_strategy = st.lists(
    st.tuples(st.sampled_from([0, 1, 2]), st.integers(min_value=1, max_value=300)), min_size=0, max_size=60
)


@settings(max_examples=300, deadline=None)
@given(stored=rows_strategy, incoming=rows_strategy, cap=st.integers(min_value=0, max_value=8000))
def test_overflow_properties(
    stored: list[tuple[int, int]], incoming: list[tuple[int, int]], cap: int
) -> None:
    rows = [RowMeta(i, p, s) for i, (p, s) in enumerate(stored + incoming)]
    split = len(stored)
    batch_bytes: dict[int, int] = {}
    for r in rows[split:]:
        batch_bytes[r.prio] = batch_bytes.get(r.prio, 0) + r.size
    plan = overflow_plan(_usage(rows[:split]), batch_bytes, cap)
    dropped = apply_overflow(rows, plan, split)
    kept = [r for r in rows if r.seq not in dropped]
    # 1. what stays fits the cap
    assert sum(r.size for r in kept) <= cap
    # 2. no row is dropped while a row of lower priority (larger number) stays
    if dropped:
        most_urgent_dropped = min(r.prio for r in rows if r.seq in dropped)
        assert all(r.prio <= most_urgent_dropped for r in kept)
    # 3. inside one priority, stored rows go before incoming ones, and oldest first
    for prio in {r.prio for r in rows}:
        same = [r for r in rows if r.prio == prio]
        flags = [r.seq in dropped for r in same]
        assert flags == sorted(flags, reverse=True), "drops are a prefix of the priority's stream"
    # 4. nothing is dropped needlessly: putting back the last dropped row of the least
    #    urgent... of the most urgent priority touched would break the cap
    if dropped:
        last = max(
            (r for r in rows if r.seq in dropped and r.prio == most_urgent_dropped), key=lambda r: r.seq
        )
        assert sum(r.size for r in kept) + last.size > cap


def test_lanes_follow_topics() -> None:
    separate = {Kind.READING: "r", Kind.RULE_FIRED: "e", Kind.RULE_CLEARED: "e", Kind.COMMAND: "c"}
    assert lane_priorities(separate) == {
        Kind.READING: Priority.READING,
        Kind.RULE_FIRED: Priority.EVENT,
        Kind.RULE_CLEARED: Priority.EVENT,
        Kind.COMMAND: Priority.COMMAND,
    }
    shared = {Kind.READING: "all", Kind.RULE_FIRED: "all", Kind.COMMAND: "c"}
    lanes = lane_priorities(shared)
    assert lanes[Kind.READING] == lanes[Kind.RULE_FIRED] == Priority.EVENT  # one topic, one lane: order holds


@pytest.mark.parametrize(
    ("rows", "now", "ttl", "expected"),
    [
        ([], 100.0, 10.0, None),
        ([(1, 95.0)], 100.0, 10.0, None),
        ([(1, 80.0), (2, 85.0), (3, 95.0)], 100.0, 10.0, 2),
        ([(1, 80.0), (2, 99.0), (3, 50.0)], 100.0, 10.0, 1),  # a clock that stepped back never reorders
        ([(1, 90.0)], 100.0, 10.0, None),  # exactly ttl old: kept
    ],
)
def test_ttl_expires_a_leading_run(
    rows: list[tuple[int, float]], now: float, ttl: float, expected: int | None
) -> None:
    assert expired_prefix(rows, now, ttl) == expected


@settings(max_examples=200, deadline=None)
@given(
    ages=st.lists(st.floats(min_value=0, max_value=1000, allow_nan=False), max_size=50),
    ttl=st.floats(min_value=0, max_value=1000, allow_nan=False),
)
def test_ttl_property(ages: list[float], ttl: float) -> None:
    now = 5000.0
    rows = [(i, now - a) for i, a in enumerate(sorted(ages, reverse=True))]  # oldest first
    last = expired_prefix(rows, now, ttl)
    for seq, at in rows:
        assert (last is not None and seq <= last) == (at < now - ttl)


