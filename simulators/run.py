"""Run a whole fleet: MQTT publishers in N processes, serial devices in a thread.

One paho publisher process manages about 7-10k QoS 1 messages/s, so a rate above that
needs ``processes > 1``. The MQTT devices are dealt out round-robin to the processes,
each publishing its share of the rate; the serial devices run in the parent.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from simulators.encoders import KIND_METRICS
from simulators.fleet import FleetSpec, SimDevice
from simulators.generator import FleetStats
from simulators.mqtt_publisher import BrokerTarget, publish_fleet
from simulators.serial_fleet import SerialFleet

__all__ = ["run_fleet", "share"]


def share(devices: list[SimDevice], all_devices: list[SimDevice], rate: float) -> float:
    """The part of ``rate`` (readings/s) that ``devices`` carry, all devices sampling alike."""
    total = sum(len(KIND_METRICS[d.kind]) for d in all_devices)
    return rate * sum(len(KIND_METRICS[d.kind]) for d in devices) / total


@dataclass(frozen=True)
class _Job:
    spec: dict[str, Any]
    target: BrokerTarget
    ids: list[str]
    rate: float
    duration: float | None
    max_messages: int | None
    client_id: str
    index: int


def _child(job: _Job, out: mp.Queue[tuple[str, int, dict[str, Any]]]) -> None:
    spec = FleetSpec.model_validate(job.spec)
    wanted = set(job.ids)
    devices = [d for d in spec.devices() if d.id in wanted]

    def progress(stats: FleetStats) -> None:
        out.put(("progress", job.index, stats.to_dict()))

    try:
        stats = publish_fleet(spec, job.target, devices=devices, rate=job.rate, duration=job.duration,
                              max_messages=job.max_messages, client_id=job.client_id, progress=progress)
    except (OSError, ConnectionError) as exc:
        out.put(("error", job.index, {"message": str(exc)}))
        return
    out.put(("done", job.index, stats.to_dict()))


def _run_publishers(
    spec: FleetSpec,
    target: BrokerTarget,
    everyone: list[SimDevice],
    mqtt_devices: list[SimDevice],
    *,
    rate: float,
    duration: float | None,
    processes: int,
    max_messages: int | None,
    progress: Callable[[FleetStats], None] | None,
) -> tuple[FleetStats, list[str]]:
    processes = max(1, min(processes, len(mqtt_devices)))
    shards = [mqtt_devices[k::processes] for k in range(processes)]
    ctx = mp.get_context("spawn")
    results: mp.Queue[tuple[str, int, dict[str, Any]]] = ctx.Queue()
    run_id = uuid.uuid4().hex[:6]
    per_max = None if max_messages is None else max(1, max_messages // processes)
    procs = [
        ctx.Process(target=_child, name=f"edgegw-sim-{k}", daemon=True, args=(
            _Job(spec.model_dump(mode="json"), target, [d.id for d in shard], share(shard, everyone, rate),
                 duration, per_max, f"edgegw-sim-{run_id}-{k}", k), results))
        for k, shard in enumerate(shards)
    ]
    for proc in procs:
        proc.start()
    total = FleetStats()
    errors: list[str] = []
    latest: dict[int, FleetStats] = {}
    finished = 0
    last_print = time.monotonic()
    while finished < len(procs):
        try:
            kind, index, data = results.get(timeout=0.5)
        except queue.Empty:
            if all(not p.is_alive() for p in procs) and results.empty():
                errors.append("a publisher process died")
                break
            continue
        if kind == "error":
            errors.append(data["message"])
            finished += 1
        elif kind == "done":
            finished += 1
            total.add(FleetStats.from_dict(data))
        else:
            latest[index] = FleetStats.from_dict(data)
            if progress is not None and time.monotonic() - last_print >= 1.0:
                last_print = time.monotonic()
                snapshot = FleetStats()
                for part in latest.values():
                    snapshot.add(part)
                progress(snapshot)
    for proc in procs:
        proc.join(timeout=10)
    return total, errors


def run_fleet(
    spec: FleetSpec,
    target: BrokerTarget | None,
    *,
    rate: float | None = None,
    duration: float | None = None,
    processes: int = 1,
    max_messages: int | None = None,
    progress: Callable[[FleetStats], None] | None = None,
    serial_fleet: SerialFleet | None = None,
) -> FleetStats:
    """Run the fleet and return the summed stats. Raises ConnectionError if a publisher could
    not connect."""
    rate = rate or spec.rate
    everyone = spec.devices()
    mqtt_devices = [d for d in everyone if not d.is_serial]
    serial_devices = [d for d in everyone if d.is_serial]
    total = FleetStats()
    stop = threading.Event()
    serial_result: list[FleetStats] = []
    serial_thread = None
    fleet = serial_fleet
    if serial_devices:
        if fleet is None:
            fleet = SerialFleet(spec, serial_devices).start()
        serial_rate = share(serial_devices, everyone, rate)
        run_serial = fleet.run
        serial_thread = threading.Thread(
            target=lambda: serial_result.append(run_serial(rate=serial_rate, duration=duration, stop=stop)),
            name="edgegw-sim-serial", daemon=True)
        serial_thread.start()
    errors: list[str] = []
    if mqtt_devices and target is not None:
        part, errors = _run_publishers(spec, target, everyone, mqtt_devices, rate=rate, duration=duration,
                                       processes=processes, max_messages=max_messages, progress=progress)
        total.add(part)
        stop.set()
    if serial_thread is not None:
        serial_thread.join()
        if serial_result:
            total.add(serial_result[0])
        if serial_fleet is None and fleet is not None:
            fleet.close()
    if errors:
        raise ConnectionError("; ".join(sorted(set(errors))))
    return total
