"""Is the wall clock synchronized by NTP? A Raspberry Pi has no real-time clock.

Until NTP syncs after boot, the wall clock can be far off and then jump; readings stamped
before that are marked so downstream can tell (timers never use the wall clock: they run
on the monotonic clock). Two probes, asked in this order:

1. the kernel, through ``adjtimex(2)`` with no mode bits (read-only, no privilege needed):
   synchronized when the estimated maximum error is below 16 s. That is the rule
   ``timedatectl`` uses ("System clock synchronized"); the ``STA_UNSYNC`` status bit alone is
   not trusted, because chrony without ``rtcsync`` keeps it set on a synchronized clock.
   The kernel lets the maximum error grow by 500 ppm while no NTP client updates it, so a
   clock that lost its NTP server long ago stops counting as synchronized.
2. systemd-timesyncd (the NTP client of Raspberry Pi OS), which creates
   ``/run/systemd/timesync/synchronized`` once it has synchronized since boot. The edgegw
   unit refuses ``adjtimex(2)`` (``ProtectClock=yes``), so under systemd this probe answers.

Neither answering gives "unknown" (``synchronized is None``). :class:`ClockSync` caches the
answer for the hot path. The probes sit behind :class:`ClockProbe`, so tests use fakes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import structlog

__all__ = [
    "MAXERROR_LIMIT_US",
    "STA_UNSYNC",
    "TIMESYNCD_FLAG",
    "ClockProbe",
    "ClockState",
    "ClockSync",
    "KernelClock",
    "SystemClockProbe",
    "clock_state",
]

_log = structlog.get_logger("edgegw.timesync")

STA_UNSYNC = 0x0040
"""``status`` bit of ``struct timex``: the clock is not synchronized (see the module docstring)."""
MAXERROR_LIMIT_US = 16_000_000
"""The kernel's NTP_PHASE_LIMIT: a maximum error this large means "not synchronized"."""
TIMESYNCD_FLAG = Path("/run/systemd/timesync/synchronized")


@dataclass(frozen=True, slots=True)
class KernelClock:
    """What ``adjtimex(2)`` reports about the system clock."""

    status: int
    """``STA_*`` bits."""
    maxerror_us: int
    """Estimated maximum error, microseconds."""

    @property
    def synchronized(self) -> bool:
        return self.maxerror_us < MAXERROR_LIMIT_US


@dataclass(frozen=True, slots=True)
class ClockState:
    synchronized: bool | None
    """True or False, or None when no probe could tell."""
    source: str
    """Which probe decided: ``kernel``, ``timesyncd`` or ``none``."""


class ClockProbe(Protocol):
    def kernel(self) -> KernelClock | None:
        """``adjtimex(2)`` read-only, or None when the call is refused or unavailable."""
        ...

    def timesyncd_synchronized(self) -> bool | None:
        """Whether timesyncd's flag file exists; None when timesyncd is not in use."""
        ...


def clock_state(probe: ClockProbe) -> ClockState:
    """Ask the kernel first, then timesyncd; see the module docstring."""
    kernel = probe.kernel()
    if kernel is not None:
        return ClockState(kernel.synchronized, "kernel")
    flag = probe.timesyncd_synchronized()
    if flag is not None:
        return ClockState(flag, "timesyncd")
    return ClockState(None, "none")


class ClockSync:
    """The answer of :func:`clock_state`, asked again at most every ``ttl`` seconds.

    ``ClockSync(SystemClockProbe()).synchronized`` is cheap enough for every reading.
    ``monotonic`` is injectable for tests; the wall clock never decides when to ask.
    """

    def __init__(
        self,
        probe: ClockProbe,
        *,
        ttl: float = 10.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._probe = probe
        self._ttl = ttl
        self._monotonic = monotonic
        self._state: ClockState | None = None
        self._asked_at = 0.0

    @property
    def state(self) -> ClockState:
        now = self._monotonic()
        if self._state is None or now - self._asked_at >= self._ttl:
            state = clock_state(self._probe)
            if self._state is None or state != self._state:
                _log.info("wall clock", synchronized=state.synchronized, source=state.source)
            self._state, self._asked_at = state, now
        return self._state

    @property
    def synchronized(self) -> bool:
        """True only when a probe said so: "unknown" counts as not synchronized."""
        return self.state.synchronized is True


class _Timex(ctypes.Structure):
    """``struct timex`` (Linux, <sys/timex.h>) as glibc's ``adjtimex`` symbol takes it."""

    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time_sec", ctypes.c_long),
        ("time_usec", ctypes.c_long),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        # the kernel reserves 11 ints of padding; extra room guards against ABI surprises
        ("_reserved", ctypes.c_int * 32),
    ]


class SystemClockProbe:
    """The real probes: ``adjtimex(2)`` through ctypes and timesyncd's flag file."""

    def __init__(self, flag_file: Path = TIMESYNCD_FLAG) -> None:
        self._flag_file = flag_file
        self._adjtimex: Callable[[ctypes._Pointer[_Timex]], int] | None = None
        libc_name = ctypes.util.find_library("c")
        if libc_name is not None:
            try:
                libc = ctypes.CDLL(libc_name, use_errno=True)
                function = libc.adjtimex
            except (OSError, AttributeError):
                function = None
            if function is not None:
                function.argtypes = [ctypes.POINTER(_Timex)]
                function.restype = ctypes.c_int
                self._adjtimex = function

    def kernel(self) -> KernelClock | None:
        if self._adjtimex is None:
            return None
        timex = _Timex()  # modes = 0: read only
        if self._adjtimex(ctypes.pointer(timex)) < 0:
            # EPERM under a seccomp filter (the unit's ProtectClock=yes), ENOSYS elsewhere
            return None
        return KernelClock(status=timex.status, maxerror_us=timex.maxerror)

    def timesyncd_synchronized(self) -> bool | None:
        if self._flag_file.exists():
            return True
        # timesyncd keeps its state in the flag file's directory; without it, it is not in use
        return False if self._flag_file.parent.is_dir() else None
