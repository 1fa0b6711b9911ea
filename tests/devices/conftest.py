"""Helpers for the device tests: a sink that collects readings, running a source in a test,
and small fleets of simulated devices with per-test device ids."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest

from devices.config import DeviceConfig
from devices.mqtt_source import MqttSource
from devices.sink import SourceBatch
from gateway.model import Reading
from simulators.fleet import FleetSpec


class Collector:
    """A sink: keeps the readings; settles each batch durable at once unless ``hold`` (then
    keeps the batches in ``acks`` for the test to settle)."""

    def __init__(self, *, hold: bool = False) -> None:
        self.readings: list[Reading] = []
        self.batches = 0
        self.hold = hold
        self.acks: list[SourceBatch] = []
        self._changed = asyncio.Event()

    def __call__(self, batch: SourceBatch, /) -> None:
        self.readings.extend(batch.readings)
        self.batches += 1
        if self.hold:
            self.acks.append(batch)
        else:
            batch.durable()
        self._changed.set()

    async def wait_for(self, count: int, within: float = 30.0) -> None:
        async with asyncio.timeout(within):
            while len(self.readings) < count:
                self._changed.clear()
                await self._changed.wait()

    async def settle(self, quiet: float = 0.3) -> None:
        """Wait until no batch arrived for ``quiet`` seconds."""
        while True:
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), quiet)
            except TimeoutError:
                return


@contextlib.asynccontextmanager
async def running(source: MqttSource, within: float = 15.0) -> AsyncIterator[MqttSource]:
    """Run ``source`` until the block ends; enter once it is connected and subscribed."""
    task = asyncio.create_task(source.run())
    try:
        async with asyncio.timeout(within):
            while not source.subscribed.is_set():
                if task.done():
                    task.result()  # raises what the source raised
                    raise AssertionError("source stopped before subscribing")
                await asyncio.sleep(0.01)
        yield source
    finally:
        source.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)


async def until(predicate: Callable[[], bool], within: float = 10.0) -> None:
    """Poll ``predicate`` (set by another thread or a callback) until it holds."""
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110 - the state lives in a thread or a callback
            await asyncio.sleep(0.01)


def small_fleet(per_profile: int = 15, **extra: Any) -> FleetSpec:
    """A fleet with ``per_profile`` devices in each of the four MQTT profiles, ids unique to
    this call (tests share one broker)."""
    token = secrets.token_hex(3)
    groups = [
        {"kind": "temperature", "count": per_profile, "profile": "zigbee2mqtt", "prefix": f"{token}-z"},
        {"kind": "power", "count": per_profile, "profile": "tasmota", "prefix": f"{token}-t"},
        {"kind": "co2", "count": per_profile, "profile": "json", "prefix": f"{token}-j"},
        {"kind": "motion", "count": per_profile, "profile": "plain", "prefix": f"{token}-p"},
    ]
    return FleetSpec.model_validate({"seed": 7, "rate": 1000, "groups": groups, **extra})


def device_configs(spec: FleetSpec) -> list[DeviceConfig]:
    return [DeviceConfig.model_validate(d) for d in spec.gateway_devices()]


def triples(readings: Sequence[Reading]) -> list[tuple[str, str, object]]:
    return [(r.device_id, r.metric, r.value) for r in readings]


@pytest.fixture
def collector() -> Collector:
    return Collector()
