"""The one backoff (MQTT and serial reconnects, the Kafka forwarder, the supervisor)."""

from __future__ import annotations

import random

from common.backoff import Backoff


def test_backoff_doubles_to_the_maximum_and_resets() -> None:
    backoff = Backoff(0.5, 8.0, rand=lambda: 1.0)
    assert [backoff.next() for _ in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert backoff.attempt == 7
    backoff.reset()
    low = Backoff(0.5, 8.0, rand=lambda: 0.0)
    assert [low.next() for _ in range(3)] == [0.25, 0.5, 1.0]  # half-jitter keeps a floor
    assert backoff.next() == 0.5


def test_each_delay_is_jittered_within_half_to_all_of_its_ceiling() -> None:
    backoff = Backoff(0.5, 8.0, rand=random.Random(7).random)
    delays = [backoff.next() for _ in range(8)]
    ceilings = [min(8.0, 0.5 * 2**i) for i in range(8)]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert len({round(d, 6) for d in delays}) == len(delays)  # jittered


def test_a_long_outage_never_overflows() -> None:
    backoff = Backoff(0.5, 30.0, rand=lambda: 1.0)
    assert [backoff.next() for _ in range(2000)][-1] == 30.0
