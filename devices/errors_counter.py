"""Bad input, counted per device and reason, logged at most once per interval per device.

Pure bookkeeping with the time passed in: ``record(device, reason, detail, now)`` counts
and returns True when a log line is due (and then logs it, with how many were
suppressed since the last one). A flood of garbage from one device costs a dict update
per message and one log line per interval, and never touches other devices.
"""

from __future__ import annotations

import time
from collections import Counter, deque

import structlog

__all__ = ["UNKNOWN_DEVICE", "BadInputCounter"]

UNKNOWN_DEVICE = "<unknown>"
"""The device label for messages on topics no device claims."""

_log = structlog.get_logger("edgegw.devices")


class BadInputCounter:
    """Counts rejected messages; ``counts[(device, reason)]`` is what ``/metrics`` exports."""

    __slots__ = ("_last_log", "_suppressed", "counts", "interval", "recent")

    def __init__(self, interval: float = 60.0) -> None:
        self.interval = interval
        self.counts: Counter[tuple[str, str]] = Counter()
        self._last_log: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()
        self.recent: deque[tuple[float, str, str, str, int]] = deque(maxlen=50)
        """The lines logged, newest last: (wall time, device, reason, detail, suppressed before)."""

    def record(self, device: str, reason: str, detail: str, now: float, **context: object) -> bool:
        self.counts[device, reason] += 1
        last = self._last_log.get(device)
        if last is not None and now - last < self.interval:
            self._suppressed[device] += 1
            return False
        self._last_log[device] = now
        suppressed = self._suppressed.pop(device, 0)
        self.recent.append((time.time(), device, reason, detail, suppressed))
        _log.warning(
            "bad input",
            device=device,
            reason=reason,
            detail=detail,
            suppressed_since_last=suppressed,
            **context,
        )
        return True

    def total(self, device: str | None = None) -> int:
        return sum(n for (dev, _), n in self.counts.items() if device is None or dev == device)

    def by_reason(self, device: str) -> dict[str, int]:
        return {reason: n for (dev, reason), n in self.counts.items() if dev == device}
