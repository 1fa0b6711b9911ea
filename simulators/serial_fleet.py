"""Simulated serial devices: each on its own pty, lines paced by the fleet's rate.

A ``disconnect`` fault unplugs a device's pty for a while and plugs in a new one at the
same path (the gateway must notice and reopen it); samples due while unplugged are
counted as dropped.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from simulators.fleet import FleetSpec, SimDevice
from simulators.generator import FleetGenerator, FleetStats
from simulators.pty_device import PtyDevice

__all__ = ["SerialFleet"]


class SerialFleet:
    """The serial part of a fleet. ``start()`` creates the ptys; ``run()`` writes lines."""

    def __init__(self, spec: FleetSpec, devices: Sequence[SimDevice] | None = None) -> None:
        self.spec = spec
        self.devices = [d for d in (devices if devices is not None else spec.devices()) if d.is_serial]
        self.ptys: dict[str, PtyDevice] = {
            d.id: PtyDevice(d.serial_path) for d in self.devices if d.serial_path is not None
        }

    def start(self) -> SerialFleet:
        for pty in self.ptys.values():
            pty.plug()
        return self

    def close(self) -> None:
        for pty in self.ptys.values():
            pty.close()

    def run(
        self,
        *,
        rate: float,
        duration: float | None = None,
        max_messages: int | None = None,
        stop: threading.Event | None = None,
    ) -> FleetStats:
        if not self.devices:
            return FleetStats()
        generator = FleetGenerator(self.spec, self.devices, rate=rate)
        stats = generator.stats
        disconnect = self.spec.faults.disconnect
        next_unplug = disconnect.every if disconnect.every > 0 else float("inf")
        replug_at = 0.0
        began = time.monotonic()
        for due, out in generator.messages():
            if (stop is not None and stop.is_set()) or (duration is not None and due >= duration):
                stats.messages -= 1
                stats.readings -= len(out.readings)
                break
            if max_messages is not None and stats.messages > max_messages:
                stats.messages -= 1
                stats.readings -= len(out.readings)
                break
            now = time.monotonic() - began
            if due > now:
                time.sleep(due - now)
            if due >= next_unplug:
                for pty in self.ptys.values():
                    pty.unplug()
                stats.disconnects += 1
                replug_at = due + disconnect.duration
                next_unplug += disconnect.every
            if replug_at:
                if due < replug_at:
                    stats.dropped += 1
                    stats.messages -= 1
                    stats.readings -= len(out.readings)
                    continue
                for pty in self.ptys.values():
                    pty.plug()
                replug_at = 0.0
            self.ptys[out.device_id].write(out.payload)
            stats.acked += 1
        stats.elapsed = time.monotonic() - began
        return stats
