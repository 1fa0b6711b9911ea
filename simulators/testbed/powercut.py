"""A power-cut test bed: a FUSE pass-through file system that forgets what was not synced.

```python
with PowerCutFS(backing_dir, mountpoint) as fs:   # mounts (a child process), unmounts on exit
    ...                     # run `edgegw run` with its state directory under mountpoint
    fs.cut()                # power off: unsynced writes and directory changes are gone
    ...                     # SIGKILL the gateway (before or after the cut)
    fs.restore()            # power back: the durable state is served, new opens work
    fs.stats()              # writes, syncs, and what the last cut dropped
```

Semantics (the strict POSIX reading; real file systems often keep more, never less):

- **File content.** Per file, the *durable content* is its content at its last successful
  ``fsync`` or ``fdatasync`` (the two are the same here: both make data and size durable).
  Writes and truncates since then (``write``, ``pwrite``, ``ftruncate``, ``truncate``,
  ``O_TRUNC``, writeback of a shared ``mmap``) are kept in memory; reads see them over the
  durable content. ``close`` syncs nothing. A cut discards them all.
- **Directory entries.** Per directory, the *durable entries* are its file names as they
  were at its last ``fsync`` of the directory itself. ``creat``/``open(O_CREAT)``,
  ``rename``, ``unlink`` and ``link`` change only the live entries until then; an fsync of
  a file never makes its name durable. After a cut every directory is back at its durable
  entries: a file created since is gone, a renamed file is back under its old name (with
  the content last fsynced under any name: content belongs to the file, not to the name),
  an unlinked file is back. A rename between two directories is undone or kept in each
  directory separately, as each was or was not fsynced (the file can end up with both
  names or neither); keep such renames out of tests that need precise answers.
- **Directories themselves** (``mkdir``, ``rmdir``, renaming a directory) are durable at
  once, and so is anything they remove (a durable file name under a new directory's name).
  Metadata other than size (mode, owner, times) is written through at once. A file
  unlinked (or renamed over) while open keeps serving its descriptors, ``fstat`` included
  (libfuse's ``.fuse_hidden*`` names for it count as the unlink and are never listed).
- **A cut** drops the above for every file and directory at one instant, then the power is
  off: every operation fails with EIO (only ``stat`` of the mount's root works) until
  :meth:`PowerCutFS.restore`; descriptors and directory handles opened before the cut keep
  failing with EIO after it (so a mapping of a file, e.g. SQLite's ``-shm``, faults with
  SIGBUS on its next page-in). Kill the writer before or right after the cut.
- **The backing directory** always holds exactly the durable state (each durable name a
  hard link; files with no durable name yet at ``.powercut/<n>``, hidden and emptied at
  mount), so after an unmount it can be inspected or mounted again. The host's own
  durability is not simulated: nothing is fsynced on the host. Only regular files and
  directories are served; symlinks, device nodes, xattrs and ``fallocate`` are not
  (ENOSYS: glibc's ``posix_fallocate`` falls back to writing).

Locking and mmap, as SQLite needs them: the file system does not implement locks, so the
kernel keeps POSIX (``fcntl``) and OFD locks locally, across processes, as on any local
file system. Files use the page cache (no ``direct_io``), so shared writable ``mmap``
works: SQLite's WAL index (``-shm``) needs nothing special (no ``locking_mode=EXCLUSIVE``).
Caching: attribute, entry and negative-lookup timeouts are 0 and the page cache of a file
is dropped at each open, so nothing from before a cut is served after it. Writes are
write-through (no writeback cache): when ``write()`` returns, the file system has the data.

Memory: unsynced data is held in 4 KiB pages in the server process: a writer that never
syncs grows it without bound.
"""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import json
import os
import select
import shutil
import subprocess
import sys
import time
from ctypes.util import find_library
from pathlib import Path
from types import TracebackType
from typing import IO

from gateway.errors import TestBedError
from simulators.testbed._powercut_model import PowerCutStats
from simulators.testbed._process import tail

__all__ = ["FuseUnavailableError", "PowerCutFS", "PowerCutStats", "fuse_problem", "unmount_fuse"]


class FuseUnavailableError(TestBedError):
    """This machine cannot mount a FUSE file system (no /dev/fuse, no permission, no libfuse)."""


def fuse_problem() -> str | None:
    """Why FUSE cannot work here, or None when it should (the mount itself may still be refused)."""
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse: this kernel or container offers no FUSE"
    try:
        os.close(os.open("/dev/fuse", os.O_RDWR))
    except OSError as exc:
        return f"cannot open /dev/fuse ({exc.strerror}): FUSE needs root or the fuse group here"
    if not (find_library("fuse3") or find_library("fuse")):
        return "libfuse is not installed: ./scripts/test installs Debian's fuse3 (or: apt-get install fuse3)"
    if os.geteuid() != 0 and not (shutil.which("fusermount3") or shutil.which("fusermount")):
        return "fusermount3 is missing (Debian package fuse3): a non-root user cannot mount without it"
    if importlib.util.find_spec("mfusepy") is None:
        return "the Python package mfusepy is missing: pip install -e '.[test]'"
    return None


def unmount_fuse(mountpoint: Path, *, lazy: bool = False) -> bool:
    """Unmount a FUSE mount: fusermount3 (or fusermount), else umount(8) as root. True on success."""
    tool = shutil.which("fusermount3") or shutil.which("fusermount")
    if tool:
        cmd = [tool, "-u", "-z", str(mountpoint)] if lazy else [tool, "-u", str(mountpoint)]
    else:
        cmd = ["umount", "-l", str(mountpoint)] if lazy else ["umount", str(mountpoint)]
    return subprocess.run(cmd, capture_output=True, check=False).returncode == 0


_REFUSED = ("Operation not permitted", "Permission denied", "fuse device not found")


class PowerCutFS:
    """Mount ``backing_dir`` at ``mountpoint`` through the power-cut file system (see the module doc).

    The FUSE server runs in a child process (``_powercut_server``) driven over a pipe;
    ``cut``/``restore``/``stats`` return once it has done it. Not reentrant across threads.
    """

    def __init__(
        self,
        backing_dir: Path,
        mountpoint: Path,
        *,
        log_path: Path | None = None,
        timeout: float = 30.0,
        fsync_delay: float = 0.0,
    ) -> None:
        self.backing_dir = Path(backing_dir).absolute()
        self.mountpoint = Path(mountpoint).absolute()
        self.log_path = log_path or self.backing_dir.with_name(self.backing_dir.name + ".powercut.log")
        self.timeout = timeout
        self.fsync_delay = fsync_delay
        """Seconds every fsync waits (an SD card's fsync takes milliseconds; this disk's does not)."""
        self._proc: subprocess.Popen[str] | None = None
        self._log: IO[str] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    # ------------------------------------------------------------------ mount
    def mount(self) -> None:
        if self._proc is not None:
            raise TestBedError(f"{self.mountpoint} is already mounted by this PowerCutFS")
        problem = fuse_problem()
        if problem is not None:
            raise FuseUnavailableError(problem)
        self.backing_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.mountpoint.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # ENOTCONN: a mount left behind by a server that died
            if exc.errno != errno.ENOTCONN or not unmount_fuse(self.mountpoint, lazy=True):
                raise
        self._log = self.log_path.open("a")
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "simulators.testbed._powercut_server",
                str(self.backing_dir),
                str(self.mountpoint),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            bufsize=1,
            env={**os.environ, "EDGEGW_POWERCUT_FSYNC_DELAY_MS": str(self.fsync_delay * 1000)},
        )
        try:
            ready = self._read(what="mount")
        except TestBedError as exc:
            self._reap()
            log = tail(self.log_path)
            if any(marker in log for marker in _REFUSED):
                raise FuseUnavailableError(f"the kernel refused the FUSE mount: {log}") from exc
            raise
        if ready.get("event") != "ready":
            self.unmount()
            raise TestBedError(f"power-cut file system said {ready!r} instead of ready")

    def unmount(self) -> None:
        """Unmount (lazily if still busy) and stop the server; idempotent.

        Not a clean shutdown: what was never synced does not reach the backing directory,
        as if the power went at the unmount.
        """
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None and not unmount_fuse(self.mountpoint):
            # Busy (a process still has files open there): detach it now and stop the server,
            # whose exit ends the connection (those files then fail with ENOTCONN).
            unmount_fuse(self.mountpoint, lazy=True)
            proc.terminate()
        with contextlib.suppress(OSError):
            if proc.stdin:
                proc.stdin.close()
        try:
            proc.wait(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
            unmount_fuse(self.mountpoint, lazy=True)
        self._reap()

    def _reap(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
                self._proc.wait(timeout=10)
            for stream in (self._proc.stdin, self._proc.stdout):
                with contextlib.suppress(OSError):
                    if stream:
                        stream.close()
        if self._log is not None:
            self._log.close()
        self._proc = None
        self._log = None

    def __enter__(self) -> PowerCutFS:
        self.mount()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.unmount()

    # ------------------------------------------------------------------ power
    def cut(self) -> PowerCutStats:
        """Drop every unsynced write and directory change; then every operation fails with EIO."""
        return self._call("cut")

    def restore(self) -> PowerCutStats:
        """Power back on: the durable state is served and new opens work (old descriptors stay dead)."""
        return self._call("restore")

    def stats(self) -> PowerCutStats:
        """Writes and syncs since the mount, the number of cuts, and what the last cut dropped."""
        return self._call("stats")

    def _call(self, op: str) -> PowerCutStats:
        proc = self._proc
        if proc is None or proc.stdin is None:
            raise TestBedError("the power-cut file system is not mounted")
        try:
            proc.stdin.write(json.dumps({"op": op}) + "\n")
            proc.stdin.flush()
        except OSError as exc:
            raise TestBedError(f"the power-cut file system server is gone: {tail(self.log_path)}") from exc
        reply = self._read(what=op)
        if not reply.get("ok"):
            raise TestBedError(f"power-cut {op} failed: {reply.get('error')}")
        raw = reply["stats"]
        assert isinstance(raw, dict)
        raw["files_affected"] = tuple(raw["files_affected"])
        return PowerCutStats(**raw)

    def _read(self, *, what: str) -> dict[str, object]:
        proc = self._proc
        assert proc is not None
        assert proc.stdout is not None
        deadline = time.monotonic() + self.timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TestBedError(f"power-cut file system: no answer to {what} in {self.timeout:.0f} s")
            readable, _, _ = select.select([proc.stdout], [], [], min(left, 0.5))
            if readable:
                line = proc.stdout.readline()
                if line:
                    message: dict[str, object] = json.loads(line)
                    return message
                proc.wait(timeout=10)
            if proc.poll() is not None:
                raise TestBedError(
                    f"power-cut file system exited with code {proc.returncode} during {what}\n"
                    f"{tail(self.log_path)}"
                )
