"""The FUSE side of :class:`~simulators.testbed.powercut.PowerCutFS`, run in a child process.

    python -m simulators.testbed._powercut_server BACKING MOUNTPOINT

Mounts (foreground, one FUSE thread) and prints ``{"event": "ready"}`` on stdout once the
kernel has initialised the mount. Control on stdin, one JSON object a line:
``{"op": "cut" | "restore" | "stats"}``, answered on stdout with
``{"ok": true, "stats": {...}}`` or ``{"ok": false, "error": "..."}``. End of stdin (the
test process went away) unmounts; so does SIGTERM.

It runs in its own process so that a test, the gateway it starts and SQLite in the test
process itself can all use the mount without sharing a GIL or a signal handler with it.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from simulators.testbed._powercut_model import PowerCutModel
from simulators.testbed.powercut import unmount_fuse

if os.environ.get("FUSE_LIBRARY_NAME") is None:
    from ctypes.util import find_library

    if find_library("fuse3"):  # mfusepy prefers libfuse 2 when both are installed; use 3
        os.environ["FUSE_LIBRARY_NAME"] = "fuse3"

import mfusepy  # type: ignore[import-untyped]  # imported after choosing the library above

# Caching: the kernel must not answer from attributes or names cached before a cut, so
# every lookup and stat comes here (no attr/entry cache). Page-cache data is dropped at each
# open (no keep_cache), which is what makes a reopened file show the durable content.
# No hard_remove: libfuse then renames an unlinked open file to .fuse_hidden*, which the
# model takes as the unlink it is; with hard_remove, fstat(2) of such a file fails with
# ESTALE. No direct_io: SQLite mmaps its -shm file.
FUSE_OPTIONS: dict[str, Any] = {
    "foreground": True,
    "nothreads": True,
    "attr_timeout": 0,
    "entry_timeout": 0,
    "negative_timeout": 0,
    "fsname": "powercut",
    "subtype": "powercut",
}


class _Fuse(mfusepy.FUSE):  # type: ignore[misc]  # mfusepy ships no type information
    """mfusepy's libfuse 3 truncate drops the file handle of ftruncate(2): pass it on."""

    def truncate_fuse_3(self, path: bytes | None, length: int, fip: Any) -> int:
        fh = fip.contents.fh if fip else None
        name = None if path is None else path.decode(self.encoding, self.errors)
        result: int = self.operations.truncate(name, length, fh)
        return result


class Operations:
    """mfusepy's operations, each a thin call into the model (which takes its lock)."""

    use_ns = True  # times as integer nanoseconds

    def __init__(self, model: PowerCutModel, ready: threading.Event) -> None:
        self.m = model
        self._ready = ready

    def init(self, _path: str) -> None:
        self._ready.set()

    def destroy(self, _path: str) -> None:
        self.m.close()

    def getattr(self, path: str | None, fh: int | None = None) -> dict[str, int]:
        return self.m.getattr(path, fh)

    def statfs(self, _path: str) -> dict[str, int]:
        return self.m.statfs()

    def chmod(self, path: str, mode: int) -> None:
        self.m.chmod(path, mode)

    def chown(self, path: str, uid: int, gid: int) -> None:
        self.m.chown(path, uid, gid)

    def utimens(self, path: str, times: tuple[int, int] | None = None) -> None:
        self.m.utimens(path, times)

    def opendir(self, path: str) -> int:
        return self.m.opendir(path)

    def readdir(self, _path: str | None, fh: int) -> list[str]:
        return self.m.readdir(fh)

    def releasedir(self, _path: str | None, fh: int) -> None:
        self.m.releasedir(fh)

    def fsyncdir(self, _path: str | None, _datasync: int, fh: int) -> None:
        self.m.fsyncdir(fh)
        if FSYNC_DELAY_S:
            time.sleep(FSYNC_DELAY_S)

    def mkdir(self, path: str, mode: int) -> None:
        self.m.mkdir(path, mode)

    def rmdir(self, path: str) -> None:
        self.m.rmdir(path)

    def create(self, path: str, mode: int, flags: int) -> int:
        return self.m.create(path, mode, flags)

    def open(self, path: str, flags: int) -> int:
        return self.m.open(path, flags)

    def read(self, _path: str | None, size: int, offset: int, fh: int) -> bytes:
        return self.m.read(fh, size, offset)

    def write(self, _path: str | None, data: bytes, offset: int, fh: int) -> int:
        return self.m.write(fh, data, offset)

    def truncate(self, path: str | None, length: int, fh: int | None = None) -> None:
        self.m.truncate(path, length, fh)

    def flush(self, _path: str | None, fh: int) -> None:
        self.m.flush(fh)

    def release(self, _path: str | None, fh: int) -> None:
        self.m.release(fh)

    def fsync(self, _path: str | None, _datasync: int, fh: int) -> None:
        self.m.fsync(fh)
        if FSYNC_DELAY_S:
            time.sleep(FSYNC_DELAY_S)  # a slow medium (an SD card): what an fsync waits

    def unlink(self, path: str) -> None:
        self.m.unlink(path)

    def rename(self, old: str, new: str) -> None:
        self.m.rename(old, new)

    def link(self, target: str, source: str) -> None:
        # mfusepy's order: ``target`` is the new name, ``source`` the existing file.
        self.m.link(source, target)


class _Control:
    """The stdin/stdout control loop, in a thread beside the FUSE loop."""

    def __init__(self, model: PowerCutModel, mountpoint: Path) -> None:
        self.model = model
        self.mountpoint = mountpoint
        self._out = threading.Lock()

    def send(self, message: dict[str, object]) -> None:
        with self._out:
            sys.stdout.write(json.dumps(message) + "\n")
            sys.stdout.flush()

    def run(self, ready: threading.Event) -> None:
        ready.wait()
        self.send({"event": "ready", "pid": os.getpid()})
        for line in sys.stdin:
            try:
                op = json.loads(line)["op"]
                if op == "cut":
                    stats = self.model.cut()
                elif op == "restore":
                    stats = self.model.restore()
                elif op == "stats":
                    stats = self.model.stats()
                else:
                    raise ValueError(f"unknown op {op!r}")
            except (ValueError, KeyError, TypeError, OSError) as exc:
                self.send({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
            else:
                self.send({"ok": True, "stats": stats.as_dict()})
        # The test process is gone (or closed our stdin to stop us): unmount, which ends the FUSE loop.
        if not unmount_fuse(self.mountpoint):
            unmount_fuse(self.mountpoint, lazy=True)


FSYNC_DELAY_S = float(os.environ.get("EDGEGW_POWERCUT_FSYNC_DELAY_MS", "0")) / 1000
"""Every fsync waits this long (``PowerCutFS(fsync_delay=...)``): to measure on a medium
whose fsync is slow, as an SD card's is (milliseconds), on a machine whose disk is fast."""


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    backing, mountpoint = Path(argv[0]), Path(argv[1])
    model = PowerCutModel(backing)
    ready = threading.Event()
    control = _Control(model, mountpoint)
    threading.Thread(target=control.run, args=(ready,), name="powercut-control", daemon=True).start()
    try:
        _Fuse(Operations(model, ready), str(mountpoint), **FUSE_OPTIONS)
    except RuntimeError as exc:  # mfusepy: fuse_main failed (mount refused, bad mountpoint)
        print(f"powercut: FUSE mount of {mountpoint} failed: {exc}", file=sys.stderr)
        return 1
    finally:
        with contextlib.suppress(OSError):
            model.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
