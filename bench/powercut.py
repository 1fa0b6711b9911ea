"""Power cuts under the real ``edgegw run``, in both spool modes: what each one loses (issue 17).

    .venv/bin/python -m bench.powercut [--cuts 10] [--messages 15000] [--rate 1250] [--seed 17]
                                       [--modes full,normal] [--devices 20] [--no-rules] [--probe N]

For each mode (``bridge.spool.synchronous``): the gateway's state directory on a
:class:`~simulators.testbed.PowerCutFS` mount, a QoS 1 stream of ``--messages`` messages
of 2 readings each (``seq`` and ``t``: by default 30,000 readings at 2,500 readings/s)
whose rules fire and clear on every other reading (bench.chaoslib.RuleRun), ``--cuts``
power cuts at seeded random moments (SIGKILL, the unsynced writes dropped, power back,
restart: bench.chaoslib.power_cut), then a read_committed count of Kafka compared with an
uninterrupted run of the pure rules engine over the acknowledged messages.

Prints per mode: readings acknowledged (by the broker, to the publisher), lost (not in
Kafka), duplicated, lost per cut (median, max), what the gateway reported lost at each
restart (``lost_at_least``, in spool rows: readings, rule events and commands; with
``--no-rules`` every row is a reading, so it compares one for one with the readings lost),
how many rows the spool lost that Kafka already had (the restart's checkpoint above the
spool), rule events missing / doubled or extra, and the time from restart to READY after a
cut (median). With ``--probe N`` each further cut waits until Kafka has what the new life
took first (the outage's backlog and N more messages): the uplink is up when the cut comes.

The FUSE mount sets the pace of each commit (see docs/powercut.md): compare the modes'
losses here, their speed on a real disk. Asserts nothing.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench.chaoslib import PowerCutOutcome, PowerCutRun, read_committed, scenario_power_cuts
from simulators.testbed import KafkaNode, Mosquitto, PowerCutFS

# The reference run and the Kafka tally are the exactly-once tests' own (tests/gateway/exactness.py).
from tests.gateway.exactness import reference, tally


@dataclass
class ModeFigures:
    mode: str
    outcome: PowerCutOutcome
    acked: int
    lost: int
    duplicated: int
    lost_per_cut: list[int]
    reported_per_cut: list[int | None]
    events_due: int
    events_missing: int
    events_extra: int
    ce_id_dups: int
    rebased: int
    reused: list[str]
    """Records that share a ``ce_id`` with another one (topic, ce_id, value), a few."""


def run_mode(mode: str, work: Path, broker: Mosquitto, kafka: KafkaNode,
             args: argparse.Namespace) -> ModeFigures:  # fmt: skip
    with PowerCutFS(work / "backing", work / "mnt") as fs:
        run = PowerCutRun(work / "run", broker, kafka, devices=args.devices,
                          state_dir=fs.mountpoint / "state", spool_options={"synchronous": mode},
                          with_rules=not args.no_rules)  # fmt: skip
        life_max = max(50, args.messages // args.cuts)
        outcome = scenario_power_cuts(run, fs, messages=args.messages, rate=args.rate, cuts=args.cuts,
                                      seed=args.seed, life_max=life_max, backlog_max=life_max // 4,
                                      probe=args.probe, quiet=10.0)  # fmt: skip
    records = {k: read_committed(kafka.bootstrap, run.topics[k]) for k in ("readings", "events", "commands")}
    kafka_side = tally(run, records["readings"], records["events"], records["commands"])
    by_id: dict[bytes, list[str]] = {}
    for kind, recs in records.items():
        for rec in recs:
            by_id.setdefault(rec.headers.get("ce_id", b""), []).append(
                f"{kind}@{rec.partition}:{rec.offset} {rec.value.decode(errors='replace')[:160]}")
    reused = [f"{ce_id.decode()}: {' | '.join(seen)}" for ce_id, seen in by_id.items() if len(seen) > 1]
    due = reference(run, sorted(outcome.acked))
    per_life: Counter[int] = Counter()
    acked = lost = dup = events_due = events_missing = events_extra = 0
    for device, want in due.items():
        got = kafka_side.devices[device]
        acked += sum(want.readings.values())
        for metric, seq in want.readings:
            if (metric, seq) not in got.readings:
                lost += 1
                per_life[outcome.life_of(seq)] += 1
        dup += sum(n - 1 for n in got.readings.values() if n > 1)
        want_ev, got_ev = Counter(want.events), Counter(got.events)
        events_due += len(want.events)
        events_missing += sum((want_ev - got_ev).values())
        events_extra += sum((got_ev - want_ev).values())
    cuts = outcome.cuts
    return ModeFigures(
        mode, outcome, acked, lost, dup,
        lost_per_cut=[per_life[c.index - 1] for c in cuts],  # life i ends with cut i + 1
        reported_per_cut=[c.lost_reported for c in cuts],
        events_due=events_due, events_missing=events_missing, events_extra=events_extra,
        ce_id_dups=kafka_side.ce_id_dups, rebased=sum(1 for c in cuts if c.rebased), reused=reused[:6],
    )  # fmt: skip


def report(f: ModeFigures, args: argparse.Namespace) -> list[str]:
    o = f.outcome
    ready = [c.ready_s for c in o.cuts]
    per_cut = f.lost_per_cut or [0]
    after_last = f.lost - sum(f.lost_per_cut)
    return [
        f"synchronous: {f.mode}  ({len(o.cuts)} cuts, {o.sent:,} messages x 2 readings at "
        f"{args.rate * 2:,.0f} readings/s, seed {args.seed}, {o.seconds:.0f} s)",
        f"  readings acknowledged      {f.acked:>8,}",
        f"  lost (not in Kafka)        {f.lost:>8,}  ({100 * f.lost / max(1, f.acked):.2f} %)"
        + (f"  [{after_last} of them taken after the last cut]" if after_last else ""),
        f"  duplicated                 {f.duplicated:>8,}  (ce_id duplicates {f.ce_id_dups})",
        f"  lost per cut               median {statistics.median(per_cut):,.0f}, max {max(per_cut):,}"
        f"  {f.lost_per_cut}",
        f"  reported lost_at_least     {f.reported_per_cut}  (spool rows at each restart)",
        "  shipped rows the spool lost " + str([int(c.rebased.get("known_shipped_rows_missing_locally", 0))
                                                if c.rebased else 0 for c in o.cuts])
        + "  (Kafka's checkpoint above the spool at the restart)",
        f"  rule events                {f.events_due:,} due, {f.events_missing:,} missing, "
        f"{f.events_extra:,} doubled or extra",
        f"  restart to READY           median {statistics.median(ready):.2f} s, max {max(ready):.2f} s"
        if ready else "  restart to READY           -",
        f"  spool back older than Kafka's checkpoint at {f.rebased} of {len(o.cuts)} restarts "
        "(rows of the new run renumbered)",
        f"  final SIGTERM exit code    {o.final_exit}",
        *(f"  ce_id shared by: {r}" for r in f.reused),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--cuts", type=int, default=10)
    parser.add_argument("--messages", type=int, default=15_000, help="QoS 1 messages, 2 readings each")
    parser.add_argument("--rate", type=float, default=1_250.0, help="messages per second")
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--modes", default="full,normal", help="comma-separated: full, normal")
    parser.add_argument("--dir", type=Path, default=None, help="where the work files go")
    parser.add_argument("--no-rules", action="store_true",
                        help="no rules: every spool row is a reading (the reported rows compare one for one)")
    parser.add_argument("--probe", type=int, default=0,
                        help="before each further cut, wait until Kafka has the outage's backlog and this "
                             "many messages more (the uplink is up and shipping when the cut comes)")
    parser.add_argument("--keep", action="store_true", help="keep the work files (logs, backing dirs)")
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if any(m not in ("full", "normal") for m in modes):
        parser.error("--modes: full and/or normal")
    work = Path(tempfile.mkdtemp(prefix="edgegw-powercut-", dir=args.dir))
    broker = Mosquitto(work / "mosquitto")
    kafka = KafkaNode(work / "kafka")
    try:
        broker.start()
        kafka.start(timeout=180)
        for mode in modes:
            figures = run_mode(mode, work / mode, broker, kafka, args)
            print("\n".join(report(figures, args)), flush=True)
    finally:
        kafka.stop()
        broker.stop()
        if args.keep:
            print(f"work files kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
