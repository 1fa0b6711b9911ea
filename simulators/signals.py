"""Signal models: what each kind of simulated sensor reports over (simulated) time.

Each device has its own ``random.Random`` seeded from the fleet seed and its id, so a
run is reproducible and a device's values do not depend on the others. ``t`` is UTC
epoch seconds (simulated time); values are rounded the way real sensors report them.

- temperature: a daily cycle (coolest near 05:00, warmest near 17:00) plus noise, °C
- humidity: the mirror of the daily cycle plus noise, %
- motion: bursts of ``occupancy: true`` separated by quiet stretches
- door: a contact that opens now and then and closes again soon (``contact: true`` = closed)
- power: a base load with appliances switching on and off, W, and the energy meter, kWh
- co2: a random walk pulled back towards 450 ppm, higher while a room is busy
"""

from __future__ import annotations

import math
import random

__all__ = ["SPIKES", "Signal", "make_signal"]

Sample = dict[str, float | bool]

SPIKES: dict[str, float] = {"temperature": 85.0, "humidity": 100.0, "power": 9999.0, "co2": 5000.0,
                            "energy": 0.0}
"""The out-of-range value a ``spike`` fault puts in place of a reading."""


def _day_phase(t: float) -> float:
    """-1 at 05:00 UTC, +1 at 17:00 UTC."""
    hours = (t % 86400.0) / 3600.0
    return math.sin(2 * math.pi * (hours - 11.0) / 24.0)


class Signal:
    """One device's signal; ``sample(t)`` returns its metrics at ``t``."""

    def __init__(self, kind: str, rng: random.Random) -> None:
        self.kind = kind
        self.rng = rng
        self.base = rng.uniform(19.0, 23.0) if kind == "temperature" else rng.uniform(35.0, 55.0)
        self._burst_left = 0
        self._open_left = 0
        self._appliance = 0.0
        self._energy = round(rng.uniform(100.0, 5000.0), 3)
        self._co2 = rng.uniform(420.0, 600.0)
        self._last_t: float | None = None

    def sample(self, t: float) -> Sample:
        rng = self.rng
        kind = self.kind
        dt = 0.0 if self._last_t is None else max(0.0, t - self._last_t)
        self._last_t = t
        if kind == "temperature":
            return {"temperature": round(self.base + 3.0 * _day_phase(t) + rng.gauss(0, 0.15), 2)}
        if kind == "humidity":
            value = self.base - 8.0 * _day_phase(t) + rng.gauss(0, 0.8)
            return {"humidity": round(min(100.0, max(0.0, value)), 1)}
        if kind == "motion":
            if self._burst_left > 0:
                self._burst_left -= 1
            elif rng.random() < 0.08:
                self._burst_left = rng.randint(2, 12)
            return {"occupancy": self._burst_left > 0}
        if kind == "door":
            if self._open_left > 0:
                self._open_left -= 1
            elif rng.random() < 0.05:
                self._open_left = rng.randint(1, 4)
            return {"contact": self._open_left == 0}
        if kind == "power":
            if rng.random() < 0.03:
                self._appliance = 0.0 if self._appliance else rng.choice([800.0, 1200.0, 2000.0])
            power = round(max(0.0, 60.0 + self._appliance + rng.gauss(0, 5.0)), 1)
            self._energy = round(self._energy + power * dt / 3_600_000.0, 3)
            return {"power": power, "energy": self._energy}
        # co2
        busy = 1.0 + max(0.0, _day_phase(t))
        self._co2 += rng.gauss(0, 8.0) * busy - (self._co2 - 450.0) * 0.02
        self._co2 = min(2000.0, max(400.0, self._co2))
        return {"co2": float(round(self._co2))}


def make_signal(kind: str, seed: int, device_id: str) -> Signal:
    return Signal(kind, random.Random(f"{seed}:{device_id}"))
