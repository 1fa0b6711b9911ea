"""Run a component and restart it with backoff when it fails, without touching the others."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Awaitable, Callable

import structlog

from common.backoff import Backoff
from gateway.errors import GatewayError, SourceRefusedError

__all__ = ["supervise"]

_log = structlog.get_logger("edgegw.supervisor")


async def supervise(
    name: str,
    run: Callable[[], Awaitable[None]],
    *,
    keep_running: Callable[[], bool],
    wake: asyncio.Event,
    restarts: Counter[str],
    errors: dict[str, str],
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
        else:
            if not keep_running():
                return
            log.warning("component ended; restarting")
            delay = backoff.next()
        if not keep_running():
            return
        if time.monotonic() - started > 60:
            backoff.reset()
        restarts[name] += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout=delay)
