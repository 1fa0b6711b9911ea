"""OS-level thread names, so ``top -H``, ``ps -L`` and ``/proc/<pid>/task/*/comm`` show which
of edgegw's threads uses the CPU (Python 3.11 names its threads only for itself)."""

from __future__ import annotations

import ctypes
import ctypes.util
import threading

__all__ = ["name_os_thread"]

_PR_SET_NAME = 15
_libc: ctypes.CDLL | None = None


def name_os_thread(name: str | None = None) -> None:
    """Give the calling thread its Python name (or ``name``) in the kernel: 15 bytes at most.
    Does nothing where prctl is not available."""
    global _libc  # noqa: PLW0603 - loaded once
    try:
        if _libc is None:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        text = (name or threading.current_thread().name).encode()[:15]
        _libc.prctl(_PR_SET_NAME, ctypes.c_char_p(text), 0, 0, 0)
    except (OSError, AttributeError):  # not Linux
        return
