"""A rule's loop guard: how many times it fired in the last minute (``max_fires_per_minute``).

Pure: times are the monotonic clock's readings, passed in. The guard keeps its fires as
runs, a start time and a count, so that what a restart resumes from (the rule's row in the
spool, logged as it changes) stays small whatever the rate:

- up to :data:`EXACT_LIMIT` fires a minute every fire is a run of its own, and each leaves
  the minute exactly 60 s after it happened;
- above it, fires less than :data:`RUN_S` after a run's start join that run, and a run
  leaves the minute whole, 60 s after its start: a fire can leave up to a second early,
  so the guard can let up to a second's worth of fires more through in a minute. A rule
  allowed thousands of fires a minute then keeps at most ~60 runs, not every fire (at
  500 fires a second, 30,000 times: an 80 KB row rewritten with every commit).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence

__all__ = ["EXACT_LIMIT", "RUN_S", "FireLog"]

EXACT_LIMIT = 60
"""Up to this many fires a minute, each fire is kept on its own."""
RUN_S = 1.0
"""Above :data:`EXACT_LIMIT`, fires within this long of a run's start join it."""
MINUTE_S = 60.0


class FireLog:
    """The fires of the last minute, as runs: ``times`` (each run's start) and ``counts``."""

    __slots__ = ("counts", "run_s", "times", "total")

    def __init__(self, limit: int) -> None:
        self.run_s = 0.0 if limit <= EXACT_LIMIT else RUN_S
        self.times: deque[float] = deque()
        self.counts: deque[int] = deque()
        self.total = 0

    @property
    def coarse(self) -> bool:
        """Whether fires join runs (and a row keeps ``counts``)."""
        return self.run_s > 0.0

    def in_last_minute(self, mono: float) -> int:
        """Fires in the minute up to ``mono`` (the runs that left it are dropped)."""
        times, counts = self.times, self.counts
        edge = mono - MINUTE_S
        while times and times[0] <= edge:
            times.popleft()
            self.total -= counts.popleft()
        return self.total

    def add(self, mono: float, n: int = 1) -> None:
        """``n`` fires at ``mono``."""
        times = self.times
        if times and mono - times[-1] < self.run_s:
            self.counts[-1] += n
        else:
            times.append(mono)
            self.counts.append(n)
        self.total += n

    def load(self, times: Iterable[float], counts: Sequence[int] | None = None) -> None:
        """Runs as a row kept them (``counts`` None: a fire each, as rows before runs were
        kept); fires close enough join runs here, so a long history of single fires loads
        as at most a minute's runs."""
        self.times.clear()
        self.counts.clear()
        self.total = 0
        for i, mono in enumerate(times):
            self.add(mono, 1 if counts is None else int(counts[i]))
