"""The message stream of a fleet: deterministic, paced by a total readings rate, with faults.

``FleetGenerator(spec, devices).messages()`` yields ``(offset, Outgoing)``: ``offset`` is
the time since the start at which the message is due. Devices take turns; each sample
advances the schedule by (readings in the sample) / rate, so the stream carries ``rate``
readings per second overall and every device samples equally often.

Every device has its own random generators (values and faults) seeded from the fleet
seed and its id: the same seed gives the same stream, however the devices are split
across publisher processes.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from simulators.encoders import KIND_METRICS, Outgoing, encode, garbage
from simulators.fleet import Faults, FleetSpec, SimDevice
from simulators.signals import SPIKES, Signal, make_signal

__all__ = ["FleetGenerator", "FleetStats"]


@dataclass
class FleetStats:
    """What a simulator run sent (summed over processes)."""

    messages: int = 0
    readings: int = 0
    bytes: int = 0
    acked: int = 0
    dropped: int = 0
    """Samples not sent: device drop-outs and disconnected periods."""
    garbage: int = 0
    spikes: int = 0
    disconnects: int = 0
    queue_full_waits: int = 0
    elapsed: float = 0.0
    by_profile: Counter[str] = field(default_factory=Counter)
    by_kind: Counter[str] = field(default_factory=Counter)

    def add(self, other: FleetStats) -> None:
        for name in ("messages", "readings", "bytes", "acked", "dropped", "garbage", "spikes",
                     "disconnects", "queue_full_waits"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.elapsed = max(self.elapsed, other.elapsed)
        self.by_profile.update(other.by_profile)
        self.by_kind.update(other.by_kind)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["by_profile"] = dict(self.by_profile)
        data["by_kind"] = dict(self.by_kind)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FleetStats:
        stats = cls(**{k: v for k, v in data.items() if k not in ("by_profile", "by_kind")})
        stats.by_profile = Counter(data.get("by_profile", {}))
        stats.by_kind = Counter(data.get("by_kind", {}))
        return stats


class _DeviceState:
    __slots__ = ("dev", "fault_rng", "signal", "silent_until")

    def __init__(self, dev: SimDevice, seed: int) -> None:
        self.dev = dev
        self.signal: Signal = make_signal(dev.kind, seed, dev.id)
        self.fault_rng = random.Random(f"{seed}:faults:{dev.id}")
        self.silent_until = -1.0


class FleetGenerator:
    """A reproducible, paced message stream for some (or all) devices of a fleet."""

    def __init__(
        self,
        spec: FleetSpec,
        devices: Sequence[SimDevice] | None = None,
        *,
        rate: float | None = None,
        start: float = 1_767_225_600.0,  # 2026-01-01T00:00:00Z: simulated time
        faults: Faults | None = None,
    ) -> None:
        self.spec = spec
        self.devices = list(devices if devices is not None else spec.devices())
        if not self.devices:
            raise ValueError("no devices to simulate")
        self.rate = rate or spec.rate
        self.start = start
        self.faults = faults if faults is not None else spec.faults
        self.stats = FleetStats()

    def take(self, count: int) -> list[Outgoing]:
        """The first ``count`` messages of the stream (what a run that sent that many sent)."""
        out: list[Outgoing] = []
        if count <= 0:
            return out
        for _, message in self.messages():
            out.append(message)
            if len(out) >= count:
                break
        return out

    def messages(self) -> Iterator[tuple[float, Outgoing]]:
        states = [_DeviceState(dev, self.spec.seed) for dev in self.devices]
        faults = self.faults
        stats = self.stats
        offset = 0.0
        i = 0
        n = len(states)
        while True:
            state = states[i % n]
            i += 1
            dev = state.dev
            sample = state.signal.sample(self.start + offset)
            due = offset
            offset += len(sample) / self.rate
            if faults.any and self._faulty(state, due, sample):
                if state.silent_until >= due:
                    stats.dropped += 1
                    continue
                out = garbage(dev, state.fault_rng)
                stats.garbage += 1
                stats.messages += 1
                stats.bytes += len(out.payload)
                stats.by_profile[dev.profile] += 1
                yield due, out
                continue
            for out in encode(dev, sample, self.start + due):
                stats.messages += 1
                stats.readings += len(out.readings)
                stats.bytes += len(out.payload)
                stats.by_profile[dev.profile] += 1
                stats.by_kind[dev.kind] += len(out.readings)
                yield due, out

    def _faulty(self, state: _DeviceState, due: float, sample: dict[str, float | bool]) -> bool:
        """Apply drop-outs and spikes in place; True when the sample is dropped or garbage."""
        faults = self.faults
        rng = state.fault_rng
        if state.silent_until >= due:
            return True
        if faults.dropout.probability and rng.random() < faults.dropout.probability:
            state.silent_until = due + faults.dropout.duration
            return True
        if faults.garbage and rng.random() < faults.garbage:
            return True
        if faults.spike and rng.random() < faults.spike:
            for metric in KIND_METRICS[state.dev.kind]:
                if metric in SPIKES and not isinstance(sample[metric], bool):
                    sample[metric] = SPIKES[metric]
                    self.stats.spikes += 1
                    break
        return False
