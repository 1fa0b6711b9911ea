"""Jittered exponential backoff for reconnects (pure; the random source is injected).

The one backoff of edgegw: the MQTT and serial sources, the Kafka forwarder and the
gateway's supervisor all retry with it.
"""

from __future__ import annotations

import random
from collections.abc import Callable

__all__ = ["Backoff"]


class Backoff:
    """``next()`` gives the next delay: ``min(max, min * 2**n)`` scaled by a jitter in [0.5, 1].

    ``reset()`` after a connection that worked. Half-jitter keeps a floor so a crowd of
    gateways that lost the same broker spread out without hammering it at once.
    """

    __slots__ = ("_attempt", "_rand", "maximum", "minimum")

    def __init__(
        self, minimum: float = 0.5, maximum: float = 60.0, *, rand: Callable[[], float] | None = None
    ) -> None:
        self.minimum = minimum
        self.maximum = maximum
        self._rand = rand or random.random
        self._attempt = 0

    def next(self) -> float:
        base = min(self.maximum, self.minimum * (2.0 ** min(self._attempt, 32)))
        self._attempt += 1
        return base * (0.5 + 0.5 * self._rand())

    def reset(self) -> None:
        self._attempt = 0

    @property
    def attempt(self) -> int:
        return self._attempt
