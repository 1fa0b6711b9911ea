"""Run a component and restart it with backoff when it fails, without touching the others."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable

import structlog

from common.backoff import Backoff
from gateway.errors import GatewayError, SourceRefusedError

__all__ = ["CRASH_LOOP_RESTARTS", "CRASH_LOOP_WINDOW_S", "crash_looping", "note_restart", "supervise"]

CRASH_LOOP_RESTARTS = 5
CRASH_LOOP_WINDOW_S = 60.0
"""A component restarted this many times within this window is restarting in a loop:
/healthz says so (503) until it has run a window without a restart."""

_log = structlog.get_logger("edgegw.supervisor")


async def supervise(
    name: str,
    run: Callable[[], Awaitable[None]],
    *,
    keep_running: Callable[[], bool],
    wake: asyncio.Event,
    restarts: Counter[str],
    errors: dict[str, str],
    restart_times: dict[str, deque[float]] | None = None,
    backoff: Backoff | None = None,
) -> None:
    """Await ``run()`` again and again while ``keep_running()``; back off between tries.

    A component that was refused by its peer (wrong credentials, failed TLS check) is
    retried at the longest backoff: retrying fast would not help and would fill the log.
    ``wake`` cuts a backoff short (the runtime sets it when it stops).
    """
    backoff = backoff or Backoff(0.5, 30.0)
    log = _log.bind(component=name)
    while keep_running():
        started = time.monotonic()
        try:
            await run()
        except SourceRefusedError as exc:
            errors[name] = str(exc)
            log.error("component refused by its peer; retrying slowly", error=str(exc))
            delay = backoff.maximum
        except (GatewayError, OSError) as exc:
            errors[name] = str(exc)
            log.warning("component failed; restarting", error=str(exc))
            delay = backoff.next()
        except Exception as exc:
            errors[name] = f"{type(exc).__name__}: {exc}"
            log.exception("component crashed; restarting", error=str(exc))
            delay = backoff.next()
        else:
            if not keep_running():
                return
            log.warning("component ended; restarting")
            delay = backoff.next()
        if not keep_running():
            return
        if time.monotonic() - started > 60:
            backoff.reset()
        note_restart(name, restarts, restart_times)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout=delay)


def note_restart(name: str, restarts: Counter[str], restart_times: dict[str, deque[float]] | None) -> None:
    """Count a restart of ``name`` (and when it happened, for :func:`crash_looping`)."""
    restarts[name] += 1
    if restart_times is not None:
        restart_times.setdefault(name, deque(maxlen=CRASH_LOOP_RESTARTS)).append(time.monotonic())


def crash_looping(restart_times: dict[str, deque[float]], now: float) -> list[str]:
    """Components restarted CRASH_LOOP_RESTARTS times within the last CRASH_LOOP_WINDOW_S."""
    return sorted(
        name
        for name, times in restart_times.items()
        if len(times) >= CRASH_LOOP_RESTARTS and now - times[0] <= CRASH_LOOP_WINDOW_S
    )
