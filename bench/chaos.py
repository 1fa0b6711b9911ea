"""``make chaos``: repeatable fault runs against the real gateway, with lost/duplicated counts.

    .venv/bin/python -m bench.chaos [SCENARIO ...] [--quick] [--no-write]

Scenarios (all by default): ``sigkill`` (N SIGKILLs of ``edgegw run`` during an
M-message run, restarted each time), ``kafka-outage`` (Kafka stopped under load),
``mosquitto-clean`` / ``mosquitto-kill`` (the broker restarted mid-run, SIGTERM or
kill -9), ``disk-full`` (the spool on a small tmpfs filling up during a Kafka outage,
then room returns), ``failover`` (the partition leader of a three-node Kafka killed),
``serial`` (a pty UART unplugged and replugged). What each one checks and guarantees:
docs/chaos.md; the scenario code is bench/chaoslib.py (the CI's short versions in
tests/chaos use the same code).

Each scenario ends with a line: readings the broker acknowledged to the publisher,
readings in Kafka (read_committed), LOST and DUPLICATED (both must be 0, but for the
copies a publisher sent again after its own connection dropped, counted apart), readings
the overflow policy dropped and counted, and the time to recover. The table goes to
``bench/results/chaos-<date>[-quick].md`` with the machine and versions. Exit code 1
when any scenario lost or duplicated a reading.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.chaoslib import (
    ChaosResult,
    Run,
    scenario_broker_restart,
    scenario_disk_full,
    scenario_kafka_outage,
    scenario_leader_failover,
    scenario_serial_unplug,
    scenario_sigkill,
)
from bench.machine import git_rev, machine_lines, write_result
from simulators.testbed import KafkaCluster, KafkaNode, Mosquitto

SCENARIOS = ("sigkill", "kafka-outage", "mosquitto-clean", "mosquitto-kill", "disk-full", "failover",
             "serial")


@dataclass(frozen=True)
class Params:
    kills: int
    kill_readings: int
    kill_rate: float
    outage: float
    outage_rate: float
    restarts: int
    restart_readings: int
    restart_rate: float
    disk_fill: float
    disk_rate: float
    failover_readings: int
    failover_rate: float
    cycles: int
    disk_size: str = "16m"
    disk_wal: int = 256


FULL = Params(kills=50, kill_readings=500_000, kill_rate=2500.0, outage=600.0, outage_rate=1000.0,
              restarts=3, restart_readings=60_000, restart_rate=2000.0, disk_fill=30.0, disk_rate=2000.0,
              failover_readings=60_000, failover_rate=2000.0, cycles=50)  # fmt: skip
QUICK = Params(kills=10, kill_readings=50_000, kill_rate=2500.0, outage=30.0, outage_rate=1000.0,
               restarts=1, restart_readings=20_000, restart_rate=2000.0, disk_fill=15.0, disk_rate=2000.0,
               failover_readings=20_000, failover_rate=1000.0, cycles=10)  # fmt: skip


class Bed:
    """Brokers for the scenarios, started lazily, stopped at the end."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self._stops: list[Callable[[], None]] = []
        self._shared: KafkaNode | None = None
        self._n = 0

    def path(self, name: str) -> Path:
        self._n += 1
        return self.work / f"{self._n:02d}-{name}"

    def broker(self, name: str) -> Mosquitto:
        broker = Mosquitto(self.path(f"mosquitto-{name}"))
        self._stops.append(broker.stop)
        broker.start()
        return broker

    def shared_kafka(self) -> KafkaNode:
        if self._shared is None:
            node = KafkaNode(self.path("kafka-shared"))
            self._stops.append(node.stop)
            node.start(timeout=180)
            self._shared = node
        return self._shared

    def own_kafka(self, name: str) -> KafkaNode:
        node = KafkaNode(self.path(f"kafka-{name}"))
        self._stops.append(node.stop)
        node.start(timeout=180)
        return node

    def cluster(self) -> KafkaCluster:
        cluster = KafkaCluster(self.path("kafka-cluster"))
        self._stops.append(cluster.stop)
        cluster.start(timeout=240)
        return cluster

    def close(self) -> None:
        for stop in reversed(self._stops):
            with contextlib.suppress(Exception):
                stop()


def run_scenario(name: str, bed: Bed, p: Params) -> ChaosResult:
    if name == "sigkill":
        run = Run(bed.path("run-sigkill"), bed.broker("sigkill"), bed.shared_kafka())
        return scenario_sigkill(run, readings=p.kill_readings, kills=p.kills, rate=p.kill_rate)
    if name == "kafka-outage":
        node = bed.own_kafka("outage")
        run = Run(bed.path("run-outage"), bed.broker("outage"), node)
        readings = int(p.outage_rate * (p.outage + 40))
        return scenario_kafka_outage(run, node, readings=readings, rate=p.outage_rate, outage=p.outage,
                                     start_after=5.0)  # fmt: skip
    if name in ("mosquitto-clean", "mosquitto-kill"):
        run = Run(bed.path(f"run-{name}"), bed.broker(name), bed.shared_kafka())
        return scenario_broker_restart(run, readings=p.restart_readings, rate=p.restart_rate,
                                       restarts=p.restarts, kill=name.endswith("kill"))  # fmt: skip
    if name == "disk-full":
        node = bed.own_kafka("disk-full")
        return scenario_disk_full(bed.path("run-disk-full"), bed.broker("disk-full"), node,
                                  rate=p.disk_rate, fill=p.disk_fill, size=p.disk_size,
                                  wal_pages=p.disk_wal)  # fmt: skip
    if name == "failover":
        cluster = bed.cluster()
        run = Run(bed.path("run-failover"), bed.broker("failover"), cluster)
        return scenario_leader_failover(run, cluster, readings=p.failover_readings, rate=p.failover_rate)
    if name == "serial":
        return scenario_serial_unplug(bed.path("run-serial"), bed.broker("serial"), bed.shared_kafka(),
                                      cycles=p.cycles)  # fmt: skip
    raise ValueError(name)


# ---------------------------------------------------------------------- report
def machine() -> list[str]:
    load = os.getloadavg()[0]
    return [
        f"- code: {git_rev()}; load average (1 min) at the end {load:.2f} (other work shares this machine)",
        *machine_lines(),
    ]


def report(results: list[ChaosResult], errors: dict[str, str], command: str) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        f"# edgegw chaos runs, {stamp}",
        "",
        f"`{command}`: the real gateway (`python -m gateway run`) against a test-bed Mosquitto "
        "(persistence on, autosave every 1 s) and Kafka (exactly_once); 20 JSON devices, 4 threshold "
        "rules driving 4 MQTT actuators. Acked = readings in messages the broker PUBACKed to the "
        "QoS 1 publisher; in Kafka = those found with read_committed. See docs/chaos.md.",
        "",
        *machine(),
        "",
        "| scenario | parameters | acked readings | in Kafka | LOST | DUPLICATED | dropped by policy "
        "| time to recover | gateway READY after (re)start | |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        ready = (f"median {sorted(r.ready)[len(r.ready) // 2]:.2f} s, max {max(r.ready):.2f} s"
                 if r.ready else "-")  # fmt: skip
        lines.append(f"| {r.scenario} | {r.params} | {r.acked:,} | {r.in_kafka:,} | {r.lost} | "
                     f"{r.duplicated + r.dup_ce_ids} | {r.dropped} | {r.recovery_text()} | {ready} | "
                     f"{'ok' if r.ok else '**FAILED**'} |")  # fmt: skip
    for name, error in errors.items():
        lines.append(f"| {name} | | | | | | | | | **could not run**: {error.splitlines()[-1][:160]} |")
    lines += ["", "Notes:", ""]
    for r in results:
        for note in r.notes:
            lines.append(f"- {r.scenario}: {note}")
        if r.lost_examples:
            lines.append(f"- {r.scenario}: first lost (device, metric, seq): {r.lost_examples[:5]}")
        if r.dup_examples:
            lines.append(f"- {r.scenario}: first duplicated: {r.dup_examples[:5]}")
        lines.append(f"- {r.scenario}: took {r.seconds:.0f} s; {r.extra} readings in Kafka from messages "
                     "sent but never acknowledged to the publisher (allowed)")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO", help=f"some of {', '.join(SCENARIOS)}")
    parser.add_argument("--quick", action="store_true", help="smaller counts (about 10 minutes in all)")
    parser.add_argument("--kills", type=int)
    parser.add_argument("--kill-readings", type=int)
    parser.add_argument("--outage", type=float, help="seconds of Kafka outage")
    parser.add_argument("--cycles", type=int, help="serial unplug/replug cycles")
    parser.add_argument("--restarts", type=int, help="Mosquitto restarts per scenario")
    parser.add_argument("--disk-size", help="size of the spool's tmpfs in disk-full (default 16m)")
    parser.add_argument("--disk-wal", type=int, metavar="PAGES",
                        help="the spool's wal_autocheckpoint in disk-full (default 256; SQLite's 1000)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="work in DIR and keep it (logs, spools, broker data) instead of a temp dir")
    args = parser.parse_args(argv)
    names = args.scenarios or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {unknown}; choose from {', '.join(SCENARIOS)}")
    base = QUICK if args.quick else FULL
    given = {"kills": args.kills, "kill_readings": args.kill_readings, "outage": args.outage,
             "cycles": args.cycles, "restarts": args.restarts, "disk_size": args.disk_size,
             "disk_wal": args.disk_wal}  # fmt: skip
    over = {k: v for k, v in given.items() if v is not None}
    params = Params(**{**base.__dict__, **over})
    command = " ".join([".venv/bin/python -m bench.chaos", *(sys.argv[1:] if argv is None else argv)])
    results: list[ChaosResult] = []
    errors: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
            tmp = str(args.keep)
        else:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="edgegw-chaos-"))
        bed = Bed(Path(tmp))
        try:
            for name in names:
                print(f"== {name}", flush=True)
                try:
                    result = run_scenario(name, bed, params)
                except Exception:  # noqa: BLE001 - one broken scenario must not hide the others' figures
                    errors[name] = traceback.format_exc()
                    print(errors[name], flush=True)
                    continue
                results.append(result)
                print(result.summary(), flush=True)
                for note in result.notes:
                    print(f"   {note}", flush=True)
        finally:
            bed.close()
    text = report(results, errors, command)
    print()
    print(text)
    if not args.no_write:
        suffix = "-quick" if args.quick else ""
        if args.scenarios:
            suffix += "-" + "-".join(names)
        write_result("chaos", text, suffix)
    return 0 if all(r.ok for r in results) and not errors else 1


if __name__ == "__main__":
    sys.exit(main())
