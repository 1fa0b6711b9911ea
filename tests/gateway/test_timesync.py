"""gateway.timesync: the decision on fake probes, the cache on a fake clock, the real probe here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from gateway.timesync import (
    MAXERROR_LIMIT_US,
    STA_UNSYNC,
    ClockState,
    ClockSync,
    KernelClock,
    SystemClockProbe,
    clock_state,
)


@dataclass
class FakeProbe:
    kernel_clock: KernelClock | None = None
    flag: bool | None = None
    asked: int = 0

    def kernel(self) -> KernelClock | None:
        self.asked += 1
        return self.kernel_clock

    def timesyncd_synchronized(self) -> bool | None:
        return self.flag


SYNCED = KernelClock(status=0, maxerror_us=120_000)
UNSYNCED = KernelClock(status=STA_UNSYNC, maxerror_us=MAXERROR_LIMIT_US)


@pytest.mark.parametrize(
    ("probe", "expected"),
    [
        (FakeProbe(SYNCED), ClockState(True, "kernel")),
        (FakeProbe(UNSYNCED), ClockState(False, "kernel")),
        # chrony without rtcsync keeps STA_UNSYNC set on a synchronized clock: maxerror decides
        (FakeProbe(KernelClock(status=STA_UNSYNC, maxerror_us=50_000)), ClockState(True, "kernel")),
        # a clock whose NTP client vanished long ago: the kernel let maxerror grow past the limit
        (FakeProbe(KernelClock(status=0, maxerror_us=MAXERROR_LIMIT_US)), ClockState(False, "kernel")),
        # the kernel answers first, whatever timesyncd's flag says
        (FakeProbe(UNSYNCED, flag=True), ClockState(False, "kernel")),
        # adjtimex refused (the unit's ProtectClock=yes): timesyncd's flag file decides
        (FakeProbe(None, flag=True), ClockState(True, "timesyncd")),
        (FakeProbe(None, flag=False), ClockState(False, "timesyncd")),
        (FakeProbe(None, flag=None), ClockState(None, "none")),
    ],
    ids=[
        "kernel-synced",
        "kernel-unsynced-at-boot",
        "chrony-sta-unsync",
        "maxerror-grown",
        "kernel-first",
        "timesyncd-synced",
        "timesyncd-not-yet",
        "unknown",
    ],
)
def test_clock_state(probe: FakeProbe, expected: ClockState) -> None:
    assert clock_state(probe) == expected


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_clock_sync_caches_for_ttl_and_notices_the_sync() -> None:
    probe = FakeProbe(UNSYNCED)
    clock = FakeMonotonic()
    sync = ClockSync(probe, ttl=10.0, monotonic=clock)
    answers = []
    with capture_logs() as logs:
        answers.append(sync.synchronized)
        probe.kernel_clock = SYNCED  # NTP syncs
        clock.now += 9.9
        answers.append(sync.synchronized)  # still the cached answer
        asked_before_ttl = probe.asked
        clock.now += 0.1
        answers.append(sync.synchronized)
        clock.now += 10
        assert sync.state == ClockState(True, "kernel")
    assert answers == [False, False, True]
    assert asked_before_ttl == 1
    assert probe.asked == 3
    assert [(e["event"], e["synchronized"]) for e in logs] == [("wall clock", False), ("wall clock", True)]


def test_unknown_counts_as_not_synchronized() -> None:
    sync = ClockSync(FakeProbe(None, flag=None))
    assert sync.state == ClockState(None, "none")
    assert sync.synchronized is False


def test_timesyncd_flag_file(tmp_path: Path) -> None:
    flag = tmp_path / "timesync" / "synchronized"
    probe = SystemClockProbe(flag_file=flag)
    assert probe.timesyncd_synchronized() is None  # timesyncd not in use: no state directory
    flag.parent.mkdir()
    assert probe.timesyncd_synchronized() is False  # running, not synchronized yet
    flag.touch()
    assert probe.timesyncd_synchronized() is True


def test_the_real_kernel_probe_answers() -> None:
    """adjtimex(2) read-only works unprivileged (outside the unit's seccomp filter)."""
    kernel = SystemClockProbe().kernel()
    if kernel is None:
        pytest.skip("adjtimex(2) is refused in this sandbox")
    assert kernel.maxerror_us >= 0
    assert isinstance(kernel.synchronized, bool)
    assert clock_state(SystemClockProbe()).source == "kernel"
