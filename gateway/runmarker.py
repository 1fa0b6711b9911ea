"""Did the last run end cleanly, and what may it have lost? ``<state_dir>/running``.

While ``edgegw run`` runs, this small file says so, with a mark: the spool sequence
below which every batch was acknowledged to its source (the PUBACKs went out), rewritten
about once a second; a clean stop removes it. At the next start:

- no file: the last run stopped cleanly;
- a file: it did not (a crash, SIGKILL, or a power cut). The spool then opens with some
  next sequence; if that is *below* the mark, the spool lost acknowledged rows (under
  ``synchronous: normal`` a power cut drops the commits since the last WAL sync). Those
  that Kafka has (its checkpoint) are not lost; the others are: at least
  ``mark - max(next_seq, checkpoint + 1)`` (the mark is up to a second old, so this is a
  lower bound). Under ``synchronous: full`` a commit is on disk before its PUBACK leaves,
  and nothing acknowledged can be lost this way.

Every write is atomic and durable (write a temporary file, fsync it, rename, fsync the
directory), so a power cut leaves the old mark or the new one, never a torn file; an
unreadable file is treated as "unclean, nothing known".
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

__all__ = ["RUN_MARKER_FILE", "LastRun", "RunMarker", "write_atomically"]

RUN_MARKER_FILE = "running"

_log = structlog.get_logger("edgegw.runmarker")


def write_atomically(path: Path, data: bytes) -> None:
    """Old content or new, never empty or torn, across a power cut: write a temporary
    file, fsync it, rename it over ``path``, fsync the directory."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)
    fsync_directory(path.parent)


def fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class LastRun:
    """What the marker says about the previous run."""

    clean: bool
    seq_mark: int | None = None
    """Every row below this sequence was acknowledged, the last time the previous run noted it."""
    at: float | None = None

    def lost_at_least(self, floor: int) -> int:
        """Acknowledged rows gone, given ``floor``: the first sequence that is neither in the
        spool nor in Kafka (the spool's next sequence, or the checkpoint's plus one)."""
        if self.clean or self.seq_mark is None:
            return 0
        return max(0, self.seq_mark - floor)


class RunMarker:
    """``begin()`` at start (reads what the last run left), ``note(seq)`` now and then
    (blocking: call it off the event loop), ``end()`` at a clean stop."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / RUN_MARKER_FILE
        self._last_seq: int | None = None

    def begin(self, seq: int) -> LastRun:
        last = self._read()
        self.note(seq)
        return last

    def _read(self) -> LastRun:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return LastRun(clean=True)
        except OSError as exc:
            _log.warning("cannot read the run marker", path=str(self.path), error=str(exc))
            return LastRun(clean=False)
        try:
            doc = json.loads(raw)
            return LastRun(clean=False, seq_mark=int(doc["seq"]), at=float(doc["at"]))
        except (ValueError, KeyError, TypeError):
            return LastRun(clean=False)

    def note(self, seq: int) -> None:
        """Record the mark (only when it moved)."""
        if seq == self._last_seq:
            return
        try:
            doc = {"seq": seq, "at": time.time(), "pid": os.getpid()}
            write_atomically(self.path, json.dumps(doc).encode())
        except OSError as exc:
            _log.warning("cannot write the run marker", path=str(self.path), error=str(exc))
            return
        self._last_seq = seq

    def end(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()
            fsync_directory(self.path.parent)
