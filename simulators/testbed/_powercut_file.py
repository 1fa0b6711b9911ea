"""One file of the power-cut file system: durable bytes on the host, unsynced changes in memory.

The host file (``fd``) holds the durable content. Writes and truncates since the last
sync are kept as whole 4 KiB pages (``pages``, each the full logical content of that page)
and as ``floor``, the lowest size the file was cut down to since: host bytes at or past
``floor`` are not visible unless a page rewrote them. ``size`` is the logical size.
Reads see the pages over the host bytes; :meth:`OverlayFile.sync` writes them through;
:meth:`OverlayFile.reset` forgets them (a power cut).
"""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from simulators.testbed._powercut_model import _Dir

__all__ = ["PAGE", "OverlayFile"]

PAGE = 4096


class OverlayFile:
    """Content overlay of one file, plus the bookkeeping the model keeps for it (names, opens)."""

    __slots__ = (
        "changed",
        "durable_links",
        "fd",
        "floor",
        "host_size",
        "ino",
        "links",
        "opens",
        "pages",
        "pending",
        "size",
        "staged",
    )

    def __init__(self, ino: int, fd: int | None, size: int) -> None:
        self.ino = ino
        self.fd = fd  # O_RDWR on the host file, opened on first use by the model
        self.size = size  # logical size, overlay applied
        self.host_size = size  # size of the host file (the durable size)
        self.floor = size  # host bytes at or past this offset are not visible
        self.pages: dict[int, bytearray] = {}  # page index -> full logical content of that page
        self.pending = 0  # bytes written since the last sync
        self.changed = False  # written or truncated since the last sync
        self.links: set[tuple[_Dir, str]] = set()  # live names
        self.durable_links: set[tuple[_Dir, str]] = set()  # names as of their directory's last fsync
        self.staged = False  # has a host link at .powercut/<ino> (exactly when it has no durable name)
        self.opens = 0  # open handles in the current power epoch

    def read(self, fd: int, size: int, offset: int) -> bytes:
        end = min(offset + size, self.size)
        if offset >= end:
            return b""
        buf = bytearray(end - offset)
        host_end = min(end, self.floor)
        if host_end > offset:
            data = os.pread(fd, host_end - offset, offset)
            buf[: len(data)] = data
        if self.pages:
            for p in range(offset // PAGE, (end - 1) // PAGE + 1):
                page = self.pages.get(p)
                if page is not None:
                    start = p * PAGE
                    lo, hi = max(offset, start), min(end, start + PAGE)
                    buf[lo - offset : hi - offset] = page[lo - start : hi - start]
        return bytes(buf)

    def write(self, fd: int, data: bytes, offset: int) -> None:
        end = offset + len(data)
        pos = offset
        while pos < end:
            p = pos // PAGE
            start = p * PAGE
            lo, hi = pos - start, min(end - start, PAGE)
            chunk = data[pos - offset : pos - offset + hi - lo]
            page = self.pages.get(p)
            if page is None and hi - lo == PAGE:
                self.pages[p] = bytearray(chunk)  # a whole page: nothing to read first
            else:
                if page is None:
                    page = self.pages[p] = self._load_page(fd, p)
                page[lo:hi] = chunk
            pos = start + hi
        self.size = max(self.size, end)
        self.pending += len(data)
        self.changed = True

    def _load_page(self, fd: int, p: int) -> bytearray:
        """The logical content of page ``p`` without an overlay page (zeros past the end)."""
        page = bytearray(PAGE)
        start = p * PAGE
        host_end = min(start + PAGE, self.floor, self.size)
        if host_end > start:
            data = os.pread(fd, host_end - start, start)
            page[: len(data)] = data
        return page

    def truncate(self, length: int) -> None:
        if length < 0:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        if length < self.size:
            for p in [p for p in self.pages if p * PAGE >= length]:
                del self.pages[p]
            page = self.pages.get(length // PAGE)
            if page is not None:
                cut_at = length % PAGE
                page[cut_at:] = bytes(PAGE - cut_at)
            self.floor = min(self.floor, length)
        self.size = length
        self.changed = True

    def sync(self, fd: int) -> None:
        """Write the overlay through to the host file: it becomes the durable content."""
        if not self.changed:
            return
        if self.floor < self.host_size:
            os.ftruncate(fd, self.floor)  # what lies past the floor reads as zeros from now
        for p in sorted(self.pages):
            start = p * PAGE
            n = min(PAGE, self.size - start)
            if n > 0:
                os.pwrite(fd, memoryview(self.pages[p])[:n], start)
        if os.fstat(fd).st_size != self.size:
            os.ftruncate(fd, self.size)
        self.host_size = self.size
        self.reset()

    def reset(self) -> None:
        """Forget every change since the last sync."""
        self.pages.clear()
        self.size = self.floor = self.host_size
        self.pending = 0
        self.changed = False
