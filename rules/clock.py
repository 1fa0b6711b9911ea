"""The time the engine is told: a monotonic reading for durations, wall time for guards."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Now"]


@dataclass(frozen=True, slots=True)
class Now:
    """One instant, seen by two clocks.

    ``mono`` (``time.monotonic()``) drives ``for``, cooldowns, windows, stale timers and
    timed reverts, so an NTP jump on a Pi without RTC moves none of them. ``wall``
    (``time.time()``, UTC epoch seconds) is only used for time-of-day, weekday and
    sun guards and for the timestamps of commands and events.
    """

    mono: float
    wall: float

    def after(self, seconds: float) -> Now:
        """The instant ``seconds`` later on both clocks (fake clocks, scenario runs)."""
        return Now(self.mono + seconds, self.wall + seconds)
