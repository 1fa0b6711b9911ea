"""common.gcsettle: what start-up built is frozen, gen0 passes are rarer."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from common import gcsettle


@pytest.fixture
def restore_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restore_gc")
def test_settle_freezes_what_exists_and_raises_the_gen0_threshold() -> None:
    built_at_start = [[i] for i in range(1000)]  # containers the collector tracks
    gc.unfreeze()
    gcsettle.settle()
    assert gc.get_freeze_count() >= len(built_at_start)
    assert gc.get_threshold() == gcsettle.GC_THRESHOLDS
    assert gcsettle.GC_THRESHOLDS[0] > 700  # rarer than CPython's default


@pytest.mark.usefixtures("restore_gc")
def test_every_pass_after_settle_is_timed() -> None:
    gcsettle.settle()
    passes, seconds = gcsettle.PAUSES.passes, gcsettle.PAUSES.seconds
    cycle: list[object] = []
    cycle.append(cycle)
    del cycle
    assert gc.collect() >= 1
    assert gcsettle.PAUSES.passes == passes + 1
    assert gcsettle.PAUSES.seconds > seconds
    assert gcsettle.PAUSES.longest > 0
