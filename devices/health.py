"""Device health: last seen, stale after a configured time, online/offline.

A small pure tracker, time passed in (monotonic seconds for staleness; the wall-clock
``last_seen`` is kept apart for display). The runtime calls ``seen`` for every batch of
readings and ``check(now)`` on a timer; ``check`` returns the state changes since the
last call, which the runtime turns into rule input (stale sensors) and metrics.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from devices.config import DeviceConfig

__all__ = ["DeviceHealth", "DeviceState", "HealthChange", "HealthTracker"]


class DeviceState(StrEnum):
    UNKNOWN = "unknown"  # configured, never heard from since start
    ONLINE = "online"
    OFFLINE = "offline"  # silent for longer than stale_after


@dataclass(slots=True)
class DeviceHealth:
    device_id: str
    stale_after: float
    state: DeviceState = DeviceState.UNKNOWN
    last_seen: float | None = None
    """Monotonic time of the last reading."""
    last_seen_wall: float | None = None
    """Wall-clock time of the last reading (UTC epoch seconds), for display."""
    messages: int = 0


@dataclass(frozen=True, slots=True)
class HealthChange:
    device_id: str
    old: DeviceState
    new: DeviceState
    at: float


class HealthTracker:
    """Online/offline per device from the time of its last message."""

    __slots__ = ("_devices",)

    def __init__(self, stale_after: dict[str, float]) -> None:
        self._devices = {dev: DeviceHealth(dev, after) for dev, after in stale_after.items()}

    @classmethod
    def for_devices(cls, devices: Iterable[DeviceConfig]) -> HealthTracker:
        """A tracker for the configured devices, each with its ``stale_after``."""
        return cls({d.id: d.stale_after for d in devices})

    def seen(self, device_id: str, now: float, wall: float | None = None) -> HealthChange | None:
        """Record a message; returns the change when the device came (back) online."""
        health = self._devices.get(device_id)
        if health is None:
            return None
        health.last_seen = now
        health.last_seen_wall = wall
        health.messages += 1
        if health.state is DeviceState.ONLINE:
            return None
        change = HealthChange(device_id, health.state, DeviceState.ONLINE, now)
        health.state = DeviceState.ONLINE
        return change

    def check(self, now: float) -> list[HealthChange]:
        """Mark devices offline whose last message is older than their ``stale_after``."""
        changes: list[HealthChange] = []
        for health in self._devices.values():
            if (
                health.state is DeviceState.ONLINE
                and health.last_seen is not None
                and now - health.last_seen > health.stale_after
            ):
                changes.append(HealthChange(health.device_id, health.state, DeviceState.OFFLINE, now))
                health.state = DeviceState.OFFLINE
        return changes

    def state(self, device_id: str, now: float) -> DeviceState:
        health = self._devices[device_id]
        if (
            health.state is DeviceState.ONLINE
            and health.last_seen is not None
            and now - health.last_seen > health.stale_after
        ):
            return DeviceState.OFFLINE
        return health.state

    def get(self, device_id: str) -> DeviceHealth:
        return self._devices[device_id]

    def snapshot(self, now: float) -> dict[str, DeviceState]:
        return {dev: self.state(dev, now) for dev in self._devices}
