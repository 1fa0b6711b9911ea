"""Small process and port helpers shared by the broker launchers."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from gateway.errors import TestBedError

__all__ = ["free_port", "stop_process", "tail", "wait_for"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def tail(path: Path, lines: int = 30) -> str:
    """The last lines of a log file, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def wait_for(
    what: str,
    probe: Callable[[], bool],
    *,
    timeout: float,
    proc: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
    interval: float = 0.1,
) -> None:
    """Poll ``probe`` until it returns True; fail early if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while True:
        if probe():
            return
        if proc is not None and proc.poll() is not None:
            detail = tail(log) if log else ""
            raise TestBedError(f"{what} exited with code {proc.returncode} while starting\n{detail}")
        if time.monotonic() > deadline:
            detail = tail(log) if log else ""
            raise TestBedError(f"{what} not ready after {timeout:.0f} s\n{detail}")
        time.sleep(interval)


def stop_process(proc: subprocess.Popen[bytes], *, timeout: float = 30.0, kill: bool = False) -> None:
    """SIGTERM (or SIGKILL with ``kill=True``) and wait; SIGKILL if SIGTERM takes too long."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
