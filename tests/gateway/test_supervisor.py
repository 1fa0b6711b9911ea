"""A failing component is restarted with backoff; a retired one is not."""

from __future__ import annotations

import asyncio
from collections import Counter

from common.backoff import Backoff
from gateway.errors import SourceError, SourceRefusedError
from gateway.supervisor import supervise


async def test_failing_component_is_restarted_until_it_runs() -> None:
    calls = 0
    restarts: Counter[str] = Counter()
    errors: dict[str, str] = {}
    done = asyncio.Event()

    async def flaky() -> None:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise SourceError(f"broker away ({calls})")
        done.set()
        await asyncio.sleep(3600)

    task = asyncio.create_task(
        supervise(
            "mqtt",
            flaky,
            keep_running=lambda: True,
            wake=asyncio.Event(),
            restarts=restarts,
            errors=errors,
            backoff=Backoff(0.001, 0.01),
        )
    )
    await asyncio.wait_for(done.wait(), 5)
    task.cancel()
    assert calls == 3
    assert restarts["mqtt"] == 2
    assert errors["mqtt"] == "broker away (2)"


async def test_refused_component_waits_the_longest_backoff() -> None:
    calls = 0
    wake = asyncio.Event()

    async def refused() -> None:
        nonlocal calls
        calls += 1
        raise SourceRefusedError("bad user name or password")

    task = asyncio.create_task(
        supervise(
            "mqtt",
            refused,
            keep_running=lambda: not wake.is_set(),
            wake=wake,
            restarts=Counter(),
            errors={},
            backoff=Backoff(0.001, 30.0),
        )
    )
    await asyncio.sleep(0.2)
    assert calls == 1  # not retried within the 30 s maximum
    wake.set()
    await asyncio.wait_for(task, 5)


async def test_retired_component_is_not_restarted() -> None:
    """A reload retires the old components first, then stops them: no restart follows."""
    current = {"generation": 0}
    calls = 0

    async def stopped_by_reload() -> None:
        nonlocal calls
        calls += 1
        current["generation"] += 1  # the reload bumped the generation, then stopped us

    await asyncio.wait_for(
        supervise(
            "old",
            stopped_by_reload,
            keep_running=lambda: current["generation"] == 0,
            wake=asyncio.Event(),
            restarts=Counter(),
            errors={},
        ),
        5,
    )
    assert calls == 1
