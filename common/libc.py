"""What edgegw asks of the C library directly (Linux, glibc), each a no-op elsewhere.

A leaf module (see :mod:`common`): the spool writer and the forwarder (``bridge/``) name
their threads with it, ``edgegw run`` (``gateway/``) tunes the heap.

- :func:`name_os_thread`: thread names in the kernel, so ``top -H``, ``ps -L`` and
  ``/proc/<pid>/task/*/comm`` show which of edgegw's threads uses the CPU (Python 3.11
  names its threads only for itself);
- :func:`limit_malloc_arenas` and :func:`release_free_memory`: glibc's heap, for a small
  resident size (``edgegw run``).
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
import threading
from collections.abc import Mapping
from typing import Any

__all__ = ["MALLOC_ARENAS", "limit_malloc_arenas", "name_os_thread", "release_free_memory"]

_PR_SET_NAME = 15  # prctl(2)
_M_ARENA_MAX = -8  # glibc's mallopt() parameter numbers (malloc.h)
MALLOC_ARENAS = 2
"""glibc gives each thread that allocates its own arena, up to 8 per core. The gateway's
threads (the spool writer, the forwarder, librdkafka's, asyncio's workers) each kept
several MiB of freed memory in theirs after a burst; two arenas hold the same load."""


@functools.cache
def _libc() -> Any:
    """The C library this process runs on, or None (not Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def name_os_thread(name: str | None = None) -> None:
    """Give the calling thread its Python name (or ``name``) in the kernel: 15 bytes at most."""
    libc = _libc()
    if libc is None or not hasattr(libc, "prctl"):
        return
    text = (name or threading.current_thread().name).encode()[:15]
    libc.prctl(_PR_SET_NAME, ctypes.c_char_p(text), 0, 0, 0)


def _glibc_heap() -> Any:
    """The C library if it has glibc's heap controls (musl has neither), else None."""
    libc = _libc()
    return libc if libc is not None and hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def limit_malloc_arenas(environ: Mapping[str, str] = os.environ) -> bool:
    """Cap glibc's malloc arenas before any thread starts; an explicit ``MALLOC_ARENA_MAX``
    in the environment wins. True when the cap was set here."""
    libc = _glibc_heap()
    if libc is None or "MALLOC_ARENA_MAX" in environ:
        return False
    return bool(libc.mallopt(_M_ARENA_MAX, MALLOC_ARENAS))


def release_free_memory() -> None:
    """Hand the C heap's free pages back to the kernel (``malloc_trim``): start-up (YAML
    parsing, pydantic validation, rule compilation) and bursts leave several MiB free but mapped."""
    libc = _glibc_heap()
    if libc is not None:
        libc.malloc_trim(0)
