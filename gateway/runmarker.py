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

The file is written whole once at start (a temporary file, fsync, rename, fsync the
directory). After that a note rewrites one of two fixed 128-byte slots in place, in
turn (``pwrite``, + ``fdatasync`` under ``synchronous: normal``): no new file, no rename,
no directory entry, so a note costs one data block and no file-system journal commit.
Under ``full`` (the default) the mark cannot show a loss (there is none), so a note is
not synced: the kernel writes the block back every ~30 s, not every second (a 4 KiB page
a second was 41 bytes a reading at 100 readings/s, a fifth of what the gateway wrote).
(An atomic rename every second cost a new inode, a directory block and a forced ext4
journal commit each time: SD-card wear, docs/raspberry-pi.md.) Each slot is a CRC-32
and a JSON document with a counter; a slot torn by a power cut fails its CRC and the
other one, one note older, is read. A file that says nothing readable is "unclean,
nothing known". The one-document file of earlier versions is still read.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

__all__ = ["RUN_MARKER_FILE", "LastRun", "RunMarker", "write_atomically"]

RUN_MARKER_FILE = "running"

_log = structlog.get_logger("edgegw.runmarker")

SLOT = 128
"""Bytes per slot: ``<crc32 hex> <json>``, padded with spaces, ending in a newline."""


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


def _slot(doc: dict[str, Any]) -> bytes:
    body = json.dumps(doc, separators=(",", ":")).encode()
    line = b"%08x %s" % (zlib.crc32(body), body)
    if len(line) > SLOT - 1:
        raise ValueError(f"run marker slot too long: {len(line)} bytes")
    return line.ljust(SLOT - 1) + b"\n"


def _json_dict(raw: bytes) -> dict[str, Any] | None:
    try:
        doc = json.loads(raw)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def _parse_slot(raw: bytes) -> dict[str, Any] | None:
    """A slot's document, or None when it is torn (its CRC does not match) or blank."""
    crc, _, body = raw.rstrip().partition(b" ")
    try:
        if int(crc, 16) != zlib.crc32(body):
            return None
    except ValueError:
        return None
    return _json_dict(body)


class RunMarker:
    """``begin()`` at start (reads what the last run left), ``note(seq)`` now and then
    (blocking: call it off the event loop), ``end()`` at a clean stop."""

    def __init__(self, state_dir: Path, *, sync: bool = True) -> None:
        self.path = state_dir / RUN_MARKER_FILE
        self.sync = sync
        """fdatasync each note (the spool's ``synchronous: normal``, where the mark is the only
        evidence of a loss); without it (``full``: nothing acknowledged can be lost) a note
        reaches the disk with the kernel's writeback, one page per ~30 s instead of one a
        second (SD-card wear), and a cut leaves an older mark."""
        self._last_seq: int | None = None
        self._fd: int | None = None
        self._count = 0

    def begin(self, seq: int) -> LastRun:
        last = self._read()
        self._close()
        self._count = 0
        self._last_seq = None
        try:
            first = _slot(self._doc(seq))
            write_atomically(self.path, first + first)
            self._fd = os.open(self.path, os.O_WRONLY)
            self._last_seq = seq
        except OSError as exc:
            _log.warning("cannot write the run marker", path=str(self.path), error=str(exc))
        return last

    def _doc(self, seq: int) -> dict[str, Any]:
        return {"n": self._count, "seq": seq, "at": round(time.time(), 3), "pid": os.getpid()}

    def _read(self) -> LastRun:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return LastRun(clean=True)
        except OSError as exc:
            _log.warning("cannot read the run marker", path=str(self.path), error=str(exc))
            return LastRun(clean=False)
        if raw.startswith(b"{"):  # the one-document file of earlier versions
            docs = [d for d in [_json_dict(raw)] if d]
        else:
            docs = [d for d in (_parse_slot(raw[i : i + SLOT]) for i in range(0, len(raw), SLOT)) if d]
        try:
            doc = max(docs, key=lambda d: int(d.get("n", 0)))
            return LastRun(clean=False, seq_mark=int(doc["seq"]), at=float(doc["at"]))
        except (ValueError, KeyError, TypeError):
            return LastRun(clean=False)

    def note(self, seq: int) -> None:
        """Record the mark (only when it moved): one slot rewritten in place, then fdatasync."""
        if seq == self._last_seq or self._fd is None:
            return
        self._count += 1
        try:
            os.pwrite(self._fd, _slot(self._doc(seq)), (self._count % 2) * SLOT)
            if self.sync:
                os.fdatasync(self._fd)
        except OSError as exc:
            _log.warning("cannot write the run marker", path=str(self.path), error=str(exc))
            return
        self._last_seq = seq

    def _close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def end(self) -> None:
        self._close()
        with contextlib.suppress(OSError):
            self.path.unlink()
            fsync_directory(self.path.parent)
