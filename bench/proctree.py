"""What a process tree costs, read from ``/proc``: the one sampler of the benches.

A *tree* is a process and its live descendants (``/proc/<pid>/task/*/children``,
recursively: any of its threads may have started them). Per tree:

- **CPU**: utime + stime of every process of the tree, plus cutime + cstime (what each one
  waited for: a reaped child's CPU is not lost), in seconds (``/proc/<pid>/stat``);
- **RSS**: VmRSS per process, in MiB (``/proc/<pid>/status``);
- **wakeups**: voluntary + involuntary context switches of every thread
  (``/proc/<pid>/task/<tid>/status``): how often its threads were switched out, i.e. slept
  and woke or were pre-empted;
- **disk**: ``write_bytes`` of ``/proc/<pid>/io`` (bytes sent to the block layer);
- **per-thread CPU**: utime + stime per thread name (``comm``), threads of one name summed;
  :func:`thread_label` folds librdkafka's ``rdk:*`` threads and the main thread.

:func:`sample` takes all of it at once (a :class:`Sample`); ``after - before`` is a
:class:`Sample` of the interval. Threads and processes that ended in between are not in
the per-thread figures (the CPU of a reaped child is, in its parent's cutime).

The parsers (``parse_*``) are pure; every reader takes ``proc`` (default ``/proc``) so the
tests can hand it a fixture tree. A process that ends while it is read is skipped.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "PROC",
    "Sample",
    "StatTimes",
    "children",
    "cpu_seconds",
    "descendants",
    "parse_io",
    "parse_stat",
    "parse_status",
    "rss_mib",
    "sample",
    "status_kib",
    "thread_cpu",
    "thread_label",
    "wakeups",
    "write_bytes",
]

PROC = Path("/proc")
TICK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------- parsers (pure)
@dataclass(frozen=True)
class StatTimes:
    """The CPU fields of one ``stat`` line, in clock ticks."""

    comm: str
    utime: int
    stime: int
    cutime: int
    cstime: int

    @property
    def own(self) -> int:
        return self.utime + self.stime

    @property
    def reaped(self) -> int:
        return self.cutime + self.cstime


def parse_stat(text: str) -> StatTimes:
    """A ``/proc/<pid>/stat`` (or ``task/<tid>/stat``) line. The command name may hold spaces
    and parentheses, so the fields are counted after the *last* ``)``; ``ValueError`` on a
    line that is not one."""
    head, sep, tail = text.rpartition(")")
    if not sep or "(" not in head:
        raise ValueError(f"not a stat line: {text[:80]!r}")
    rest = tail.split()
    if len(rest) < 15:
        raise ValueError(f"a stat line with {len(rest)} fields after the name: {text[:80]!r}")
    # after the name: state(0) ppid pgrp session tty tpgid flags minflt cminflt majflt
    # cmajflt utime(11) stime(12) cutime(13) cstime(14)
    comm = head.split("(", 1)[1]
    return StatTimes(comm, int(rest[11]), int(rest[12]), int(rest[13]), int(rest[14]))


def parse_status(text: str) -> dict[str, str]:
    """``/proc/<pid>/status`` as {key: value text}."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def status_kib(status: dict[str, str], key: str) -> int:
    """A number of ``status`` (``VmRSS`` in kB, ``voluntary_ctxt_switches``); 0 when absent
    (a kernel thread or a zombie has no ``VmRSS``)."""
    value = status.get(key, "")
    return int(value.split()[0]) if value else 0


def parse_io(text: str) -> dict[str, int]:
    """``/proc/<pid>/io`` as {field: value}."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            with contextlib.suppress(ValueError):
                out[key.strip()] = int(value)
    return out


def thread_label(comm: str) -> str:
    """The name a thread's CPU is reported under: librdkafka's ``rdk:*`` threads together,
    a Python main thread (``python``, ``python3.11``) as the event loop; others as named."""
    if comm.startswith("rdk:"):
        return "librdkafka"
    if comm.startswith("python"):
        return "event loop"
    return comm


# ---------------------------------------------------------------------- readers
def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return None


def _tasks(pid: int, proc: Path) -> list[Path]:
    try:
        return sorted((proc / str(pid) / "task").iterdir())
    except OSError:
        return []


def children(pid: int, proc: Path = PROC) -> list[int]:
    """The child processes of ``pid`` (started by any of its threads)."""
    out: list[int] = []
    for task in _tasks(pid, proc):
        text = _read(task / "children")
        if text:
            out += [int(c) for c in text.split()]
    return out


def descendants(pid: int, proc: Path = PROC) -> list[int]:
    """``pid`` first, then its live descendants, depth first."""
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo += reversed(children(p, proc))
    return tree


def cpu_seconds(pid: int, proc: Path = PROC, *, tree: bool = True) -> float:
    """utime + stime + cutime + cstime of every process of the tree, in seconds
    (``tree=False``: utime + stime of ``pid`` alone)."""
    ticks = 0
    for p in descendants(pid, proc) if tree else [pid]:
        text = _read(proc / str(p) / "stat")
        with contextlib.suppress(ValueError):
            if text is not None:
                times = parse_stat(text)
                ticks += times.own + (times.reaped if tree else 0)
    return ticks / TICK


def rss_mib(pid: int, proc: Path = PROC) -> dict[str, float]:
    """VmRSS (MiB) of ``pid`` (``main``) and of each live descendant (by its ``comm``;
    descendants of one name summed)."""
    out: dict[str, float] = {}
    for p in descendants(pid, proc):
        status = _read(proc / str(p) / "status")
        if status is None:
            continue
        fields = parse_status(status)
        name = "main" if p == pid else fields.get("Name", "?")
        out[name] = out.get(name, 0.0) + status_kib(fields, "VmRSS") / 1024
    return out


def wakeups(pid: int, proc: Path = PROC) -> int:
    """Voluntary + involuntary context switches of every live thread of the tree."""
    total = 0
    for p in descendants(pid, proc):
        for task in _tasks(p, proc):
            text = _read(task / "status")
            if text is not None:
                fields = parse_status(text)
                total += status_kib(fields, "voluntary_ctxt_switches")
                total += status_kib(fields, "nonvoluntary_ctxt_switches")
    return total


def write_bytes(pid: int, proc: Path = PROC) -> int:
    """``write_bytes`` of every process of the tree (``/proc/<pid>/io``: readable for our own
    processes only)."""
    total = 0
    for p in descendants(pid, proc):
        text = _read(proc / str(p) / "io")
        if text is not None:
            total += parse_io(text).get("write_bytes", 0)
    return total


def thread_cpu(pid: int, proc: Path = PROC, *, tree: bool = True) -> dict[str, float]:
    """CPU seconds per :func:`thread_label` over the tree (``tree=False``: ``pid`` only)."""
    out: dict[str, float] = {}
    for p in descendants(pid, proc) if tree else [pid]:
        for task in _tasks(p, proc):
            text = _read(task / "stat")
            if text is None:
                continue
            with contextlib.suppress(ValueError):
                times = parse_stat(text)
                name = thread_label(times.comm)
                out[name] = out.get(name, 0.0) + times.own / TICK
    return out


# ---------------------------------------------------------------------- a sample
@dataclass
class Sample:
    """A tree's counters at one moment (or, as ``b - a``, over an interval; RSS is ``b``'s)."""

    cpu: float = 0.0
    wakeups: int = 0
    write_bytes: int = 0
    rss: dict[str, float] = field(default_factory=dict)
    threads: dict[str, float] = field(default_factory=dict)

    @property
    def rss_total(self) -> float:
        return sum(self.rss.values())

    def __sub__(self, before: Sample) -> Sample:
        return Sample(
            self.cpu - before.cpu,
            self.wakeups - before.wakeups,
            self.write_bytes - before.write_bytes,
            dict(self.rss),
            {k: v - before.threads.get(k, 0.0) for k, v in self.threads.items()},
        )


def sample(pid: int, proc: Path = PROC) -> Sample:
    return Sample(
        cpu_seconds(pid, proc),
        wakeups(pid, proc),
        write_bytes(pid, proc),
        rss_mib(pid, proc),
        thread_cpu(pid, proc),
    )
