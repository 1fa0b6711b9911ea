"""A virtual serial device on a pseudo-terminal pair, reachable at a stable symlink.

``os.openpty()`` gives a master (our end) and a slave (``/dev/pts/N``, what pyserial
opens like a USB adapter). The device publishes the slave under a path we choose (a
symlink, like udev's ``/dev/serial/by-id/...``). ``unplug()`` closes both ends, so the
gateway's reads fail as on a pulled USB cable; ``plug()`` creates a new pty and
re-points the symlink atomically, so reopening the same path reaches the new device.
"""

from __future__ import annotations

import contextlib
import os
import select
import tty
from pathlib import Path
from types import TracebackType

__all__ = ["PtyDevice"]


class PtyDevice:
    def __init__(self, link: str | Path) -> None:
        self.link = Path(link)
        self.master: int | None = None
        self._slave: int | None = None
        self.slave_name: str | None = None
        self.plugs = 0

    @property
    def plugged(self) -> bool:
        return self.master is not None

    def plug(self) -> PtyDevice:
        """Create a fresh pty and point the symlink at it."""
        if self.plugged:
            return self
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no line editing: bytes pass as on a real UART
        os.set_blocking(master, False)
        self.master, self._slave = master, slave
        self.slave_name = os.ttyname(slave)
        self.link.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.link.with_name(f".{self.link.name}.{os.getpid()}.tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(self.slave_name)
        tmp.replace(self.link)  # atomic: readers see the old or the new pty, never none
        self.plugs += 1
        return self

    def unplug(self) -> None:
        """Close both ends: the reader's next read fails, as when a USB cable is pulled."""
        for fd in (self.master, self._slave):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.master = self._slave = None

    def write(self, data: bytes, timeout: float = 2.0) -> int:
        """Write all of ``data`` to the device side; returns bytes written (0 when unplugged)."""
        if self.master is None:
            return 0
        view = memoryview(data)
        sent = 0
        while sent < len(data):
            try:
                sent += os.write(self.master, view[sent:])
            except BlockingIOError:
                _, ready, _ = select.select([], [self.master], [], timeout)
                if not ready:
                    break  # nobody reads: the tty buffer is full; drop the rest like a UART
            except OSError:
                break
        return sent

    def read(self, timeout: float = 0.0) -> bytes:
        """What the gateway wrote to the device (commands), or b""."""
        if self.master is None:
            return b""
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return b""
        try:
            return os.read(self.master, 65536)
        except OSError:
            return b""

    def close(self) -> None:
        self.unplug()
        with contextlib.suppress(FileNotFoundError):
            if self.link.is_symlink():
                self.link.unlink()

    def __enter__(self) -> PtyDevice:
        return self.plug()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
