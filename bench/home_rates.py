"""CPU, disk writes and latency of ``edgegw run`` and its peers at the rates a house sees (issue 16, item 4).

    .venv/bin/python -m bench.home_rates [--seconds 30] [--idle 60] [--write]
    .venv/bin/python -m bench.home_rates --before /path/to/old/checkout [--before-python PY]
    .venv/bin/python -m bench.home_rates --peers edgegw-eos --rates 1000 --log-level warning

Starts a test-bed Mosquitto (``set_tcp_nodelay true``) and a single-node Kafka, writes the
workload of issue 16 (100 Zigbee2MQTT temperature sensors, a rule ``temperature > 30`` on
each commanding its own actuator; the configs of ``bench.e2e_bench``) and runs, one at a
time on the same broker (``--peers``, default all of them):

- ``edgegw-spool``, ``edgegw-eos``: ``python -m gateway run`` of each checkout (this one,
  "after"; ``--before DIR``, "before"), spool only, and spool + exactly-once Kafka uplink
  (fresh state directory and topics per gateway);
- ``bare``: the bare paho subscriber of ``bench.peers_bare`` (the reference);
- ``nodered``: Node-RED 4.1 (``bench.peers_nodered``: installed by npm into
  ``~/.cache/edgegw-bench`` once; the row says so when node or npm is missing).

The peers command on ``temperature > 30`` only, so by default the gateways' rules have no
``else`` either (one command per hot reading, as in ``bench.peers``); ``--else`` gives the
gateways' rules ``else`` actions (a command on every crossing; the peers' rows then count
only hot readings). Each row: the peer starts; a probe (a cold then a hot reading of the
first sensor until its command arrives) says it is ready, for every row alike; then

1. **idle** (``--idle`` s, no readings): CPU seconds per minute, context switches per
   second (how often its threads sleep and wake or are pre-empted), disk bytes written,
   and the tree's VmRSS at the end (idle RSS);
2. **100, 1,000 and 5,000 readings/s** (``--seconds`` s each, one paced publisher process,
   paho, QoS 1, ``bench.e2e_bench.PubJob``): every 10th message is one sensor alternating
   across its threshold (its send time in the payload); the other 9 go round the other 98
   sensors, below their thresholds. Measured: CPU seconds per 1,000 readings published,
   disk bytes written per reading against the MQTT payload bytes, spool commits per
   second (edgegw, when ``/metrics`` has ``edgegw_spool_commits_total``), command latency
   (sensor publish to command arrival) p50/p99, the spool's submit-to-durable p50/p99
   (what a QoS 1 PUBACK waits, ``edgegw_spool_durable_p*_ms``: recent groups) and CPU
   seconds per thread name (``edgegw-spool``, ``edgegw-uplink``, librdkafka's ``rdk:*``,
   the event loop; Node-RED's ``node`` and libuv threads).

Every figure of a process is of its tree (``bench.proctree``: the process, its live
descendants and what they reaped). ``--log-level`` sets the gateways' log level (default
info, the level a house runs at; ``bench.peers`` runs them at warning). ``--rounds``
repeats the whole sequence (rows interleaved; every other round runs ``--before`` and this
checkout in the other order); the table gives medians over rounds.
Prints a markdown table; ``--write`` writes it to ``bench/results/home-rates-<date>[-SUFFIX].md``.
Nothing is asserted. Every process started here is stopped on exit.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import peers, proctree
from bench.brokers import start_brokers
from bench.e2e_backlog import summarise
from bench.e2e_bench import (
    CommandListener,
    Gateway,
    Layout,
    PubJob,
    _payload,
    edit_config,
    forget_session,
    make_layout,
    make_topics,
    metric,
    publishers,
    uplink_state,
    wait_metrics,
    write_config,
)
from bench.machine import ROOT, git_rev, machine_lines, write_result
from bench.peers_nodered import NodeRedMissing, install
from simulators.testbed import free_port

RATES = (100, 1000, 5000)
KINDS = ("edgegw-spool", "edgegw-eos", "bare", "nodered")
LABELS = {"bare": "bare paho subscriber", "nodered": "Node-RED 4.1"}
MODE = {"edgegw-spool": "spool", "edgegw-eos": "kafka"}


# ---------------------------------------------------------------------- the gateway of a checkout
@dataclass(frozen=True)
class Variant:
    name: str
    root: Path
    python: str
    spool: dict[str, Any] = field(default_factory=dict)
    kafka: dict[str, Any] = field(default_factory=dict)
    mqtt: dict[str, Any] = field(default_factory=dict)


class Target:
    """A row's process: an edgegw (with ``/metrics``) or a peer (``bench.peers.PeerProcess``)."""

    def __init__(self, pid: int, stop: Callable[[], None], alive: Callable[[], bool],
                 tail: Callable[[], str], gw: Gateway | None = None) -> None:  # fmt: skip
        self.pid = pid
        self.stop = stop
        self.alive = alive
        self._tail = tail
        self.gw = gw

    def tail(self, lines: int = 20) -> str:
        return "\n".join(self._tail().splitlines()[-lines:])

    def scrape(self) -> dict[str, float]:
        return (self.gw.scrape() if self.gw is not None else None) or {}


# ---------------------------------------------------------------------- one phase
@dataclass
class Phase:
    readings: float = 0.0
    seconds: float = 0.0
    cpu: float = 0.0
    write_bytes: float = 0.0
    payload_bytes: float = 0.0
    wakeups: float = 0.0
    rss: float = float("nan")
    commits: float | None = None
    p50: float = float("nan")
    p99: float = float("nan")
    seen: int = 0
    sent: int = 0
    durable_p50: float | None = None
    durable_p99: float | None = None
    threads: dict[str, float] = field(default_factory=dict)

    @property
    def cpu_per_k(self) -> float:
        return self.cpu / self.readings * 1000 if self.readings else float("nan")

    @property
    def bytes_per_event(self) -> float:
        return self.write_bytes / self.readings if self.readings else float("nan")


class Probe:
    """Figures of a row's process tree (``bench.proctree``) and its /metrics at one moment."""

    def __init__(self, target: Target) -> None:
        self.t = time.monotonic()
        self.tree = proctree.sample(target.pid)
        self.series = target.scrape()

    def phase(self, before: Probe, readings: float) -> Phase:
        d = self.tree - before.tree
        p = Phase(readings, self.t - before.t, d.cpu, d.write_bytes, wakeups=d.wakeups, rss=d.rss_total)
        p.threads = d.threads
        if any(k.startswith("edgegw_spool_commits_total") for k in self.series):
            p.commits = metric(self.series, "edgegw_spool_commits_total") - metric(
                before.series, "edgegw_spool_commits_total"
            )
        for q in ("p50", "p99"):
            key = f"edgegw_spool_durable_{q}_ms"
            if key in self.series:
                setattr(p, f"durable_{q}", self.series[key])
        return p


def paced(target: Target, port: int, layout: Layout, rate: int, seconds: float, *, every: bool) -> Phase:
    """``rate`` readings/s for ``seconds``; ``every``: the target commands on every crossing
    of the latency sensor (rules with ``else``), else on its hot readings only."""
    device = layout.latency[0]
    others = [d for d in layout.devices if d != device]
    topic = f"zigbee2mqtt/{Layout.actuator(device)}/set"
    listener = CommandListener(port, [topic])
    count = int(rate * seconds)
    job = PubJob(port, others, frozenset(), count, float(rate), lat_device=device)
    before = Probe(target)
    try:
        with publishers([job]) as results:
            sends: list[int] = results[0]["sends"]
            elapsed: float = results[0]["elapsed"]
        if not every:
            sends = sends[::2]  # the hot ones (the latency sensor starts above its threshold)
        deadline = time.monotonic() + 10
        while len(listener.arrivals.get(topic, [])) < len(sends) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(2.5)  # the last group commits (at most commit_max_delay, 2 s) and ships
    finally:
        listener.close()
    phase = Probe(target).phase(before, count)
    lat = summarise(sends, listener.arrivals.get(topic, []), count, elapsed)
    phase.p50, phase.p99, phase.seen, phase.sent = lat.p50, lat.p99, lat.seen, lat.sent
    phase.payload_bytes = count * len(_payload(20.0 + 1e-6))  # ~40 bytes, 9 in 10 readings
    return phase


def idle(target: Target, seconds: float) -> Phase:
    before = Probe(target)
    time.sleep(seconds)
    return Probe(target).phase(before, 0)


# ---------------------------------------------------------------------- one row
def config_for(
    bed: peers.Bed, name: str, mode: str, variant: Variant, args: argparse.Namespace
) -> tuple[Path, int]:
    http_port = free_port()
    name = re.sub(r"[^A-Za-z0-9_-]", "_", name)
    kafka = mode == "kafka" and bed.node is not None
    topics = make_topics(bed.node, f"home-{name}-{uuid.uuid4().hex[:6]}") if kafka and bed.node else {}
    path = bed.work / f"edgegw-{name}.json"
    write_config(path, bed.layout, bed.devices, mqtt_port=bed.broker.port, topics=topics,
                 bootstrap=bed.node.bootstrap if kafka and bed.node else "", http_port=http_port,
                 state=bed.work / f"state-{name}")  # fmt: skip
    edit_config(path, client_id=f"edgegw-home-{name}", log_level=args.log_level, otherwise=args.otherwise,
                kafka=variant.kafka if kafka else False, spool=variant.spool, mqtt=variant.mqtt)  # fmt: skip
    return path, http_port


def start(bed: peers.Bed, kind: str, variant: Variant | None, args: argparse.Namespace, tag: str) -> Target:
    if variant is None:  # a peer
        proc = peers.start_peer(bed, peers.Peer(kind, LABELS[kind]), 1)
        return Target(proc.pid, lambda: peers.stop_peer(bed, proc), proc.alive, proc.tail)
    config, http_port = config_for(bed, f"{variant.name}-{MODE[kind]}-{tag}", MODE[kind], variant, args)
    gw = Gateway(config, variant.root, http_port, root=variant.root, python=variant.python)

    def stop() -> None:
        gw.stop()
        if not args.keep_sessions:  # or the broker queues every later reading for it (and autosaves them)
            forget_session(bed.broker.port, json.loads(config.read_text())["mqtt"]["client_id"])

    return Target(gw.pid, stop, lambda: gw.proc.poll() is None, lambda: "\n".join(gw.tail), gw)


def run_row(
    bed: peers.Bed, kind: str, variant: Variant | None, args: argparse.Namespace, tag: str
) -> dict[str, Phase]:
    name = f"{variant.name} {kind}" if variant is not None else LABELS[kind]
    target = start(bed, kind, variant, args, tag)
    out: dict[str, Phase] = {}
    try:
        took = peers.probe(bed.broker.port, bed.layout.devices[0], target, 1)
        if target.gw is not None and kind == "edgegw-eos":
            wait_metrics(target.gw, "the uplink to be up", lambda m: uplink_state(m) == "up", timeout=60)
        time.sleep(3.0)  # start-up work (first checkpoint, producer init) out of the idle figure
        db = bed.broker.workdir / "data" / "mosquitto.db"  # autosaved every second by the test bed
        size = db.stat().st_size if db.exists() else 0
        print(f"  {name}: ready after {took:.1f} s (broker's persistence file {size:,} bytes); "
              f"idle {args.idle:g} s", flush=True)  # fmt: skip
        out["idle"] = idle(target, args.idle)
        for rate in args.rates:
            print(f"  {name}: {rate}/s for {args.seconds:g} s", flush=True)
            every = args.otherwise and variant is not None
            ph = out[str(rate)] = paced(target, bed.broker.port, bed.layout, rate, args.seconds, every=every)
            print(f"    command p50 {ph.p50:.2f} ms, p99 {ph.p99:.2f} ms ({ph.seen}/{ph.sent}); "
                  f"CPU {ph.cpu_per_k:.3f} s/1k", flush=True)  # fmt: skip
    finally:
        target.stop()
    return out


# ---------------------------------------------------------------------- report
def _med(values: list[float]) -> float:
    values = [v for v in values if v == v]
    return statistics.median(values) if values else float("nan")


def _fmt(v: float | None, spec: str) -> str:
    return "n/a" if v is None or v != v else format(v, spec)


Row = tuple[str, str]  # (variant or "-", kind)


def row_name(row: Row) -> tuple[str, str]:
    variant, kind = row
    if variant == "-":
        return LABELS[kind], "-"
    return f"edgegw {variant}", "spool" if kind == "edgegw-spool" else "spool + exactly-once Kafka"


def report(results: dict[Row, list[dict[str, Phase]]], args: argparse.Namespace, variants: list[Variant],
           load: tuple[float, float], notes: list[str]) -> str:  # fmt: skip
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    rules = "with `else` (a command per crossing; the peers' rows: per hot reading)" if args.otherwise else (
        "without `else` (a command per hot reading, as the peers)")  # fmt: skip
    lines = [
        f"# CPU, disk writes and latency at home rates, edgegw and its peers (issue 16, item 4), {when}",
        "",
        "    .venv/bin/python -m bench.home_rates " + " ".join(args.argv),
        "",
        f"Run from {git_rev()}. edgegw checkouts: "
        + "; ".join(f"**{v.name}** = {v.root} ({_rev(v.root)})" for v in variants)
        + f". 100 sensors, a rule each {rules}, every 10th reading the latency sensor alternating across "
        f"its threshold; one paho publisher, QoS 1; gateway log level {args.log_level}; {args.seconds:g} s "
        f"per rate, {args.idle:g} s idle; {args.rounds} round(s), medians. Load average {load[0]:.2f} at the "
        f"start, {load[1]:.2f} at the end: a shared 2-core machine, figures are indicative only.",
        "",
        *machine_lines(),
        *notes,
        "",
        "Every figure is of the row's process tree (`bench.proctree`: the process, its live descendants "
        "and what they reaped). CPU: utime+stime, per 1,000 readings published. Wakeups: voluntary + "
        "involuntary context switches of all its threads. Disk: `write_bytes` (`/proc/<pid>/io`) per "
        "reading, and as a multiple of the MQTT payload (~40 bytes per reading). Idle RSS: VmRSS of the "
        "tree at the end of the idle phase. Commits: `edgegw_spool_commits_total`. PUBACK wait: the "
        "spool's submit-to-durable p50/p99 (recent groups). Latency: sensor publish to command arrival.",
        "",
        "| row | mode | phase | CPU s / 1k readings | CPU s / min | wakeups / s | disk bytes / reading "
        "(x payload) | idle RSS MiB | commits / s | command p50 / p99 ms | PUBACK wait p50 / p99 ms "
        "| commands seen |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row, runs in results.items():
        name, mode = row_name(row)
        for ph in ["idle", *map(str, args.rates)]:
            got = [r[ph] for r in runs if ph in r]
            if not got:
                continue
            cpu_k = _med([p.cpu_per_k for p in got])
            cpu_min = _med([p.cpu / p.seconds * 60 for p in got])
            wake = _med([p.wakeups / p.seconds for p in got])
            commits = [p.commits / p.seconds for p in got if p.commits is not None]
            c = _med(commits) if commits else None
            if ph == "idle":
                disk = f"{_med([p.write_bytes / p.seconds for p in got]):,.0f} B/s"
                rss = f"{_med([p.rss for p in got]):.1f}"
                lat = seen = "-"
            else:
                bpe = _med([p.bytes_per_event for p in got])
                xp = _med([p.write_bytes / p.payload_bytes if p.payload_bytes else float("nan") for p in got])
                disk = f"{_fmt(bpe, ',.0f')} ({_fmt(xp, '.1f')}x)"
                rss = "-"
                lat = f"{_med([p.p50 for p in got]):.2f} / {_med([p.p99 for p in got]):.2f}"
                seen = f"{sum(p.seen for p in got)}/{sum(p.sent for p in got)}"
            d50 = [p.durable_p50 for p in got if p.durable_p50 is not None]
            d99 = [p.durable_p99 for p in got if p.durable_p99 is not None]
            dur = f"{_med(d50):.1f} / {_med(d99):.1f}" if d50 and d99 else "n/a"
            label = "idle" if ph == "idle" else f"{int(ph):,}/s"
            lines.append(
                f"| {name} | {mode} | {label} | {'-' if ph == 'idle' else _fmt(cpu_k, '.3f')} | "
                f"{cpu_min:.2f} | {wake:,.0f} | {disk} | {rss} | {_fmt(c, ',.1f')} | {lat} | {dur} | {seen} |"
            )
    lines += ["", "CPU seconds per 1,000 readings by thread (medians):", ""]
    for row, runs in results.items():
        name, mode = row_name(row)
        for ph in map(str, args.rates):
            got = [r[ph] for r in runs if ph in r]
            if not got:
                continue
            names = sorted({n for p in got for n in p.threads})
            parts = []
            for n in names:
                share = _med([p.threads.get(n, 0.0) / p.readings * 1000 for p in got if p.readings])
                if share >= 0.005:
                    parts.append(f"{n} {share:.3f}")
            lines.append(f"- {name}{'' if mode == '-' else ', ' + mode}, {int(ph):,}/s: " + ", ".join(parts))
    return "\n".join(lines) + "\n"


def _rev(root: Path) -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                         check=False, cwd=root).stdout  # fmt: skip
    return out.strip() or "?"


def _value(text: str) -> Any:
    """A --spool value: JSON (numbers) or a plain string (``250ms``)."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _mqtt_settings(pairs: list[str]) -> dict[str, Any]:
    """--mqtt values: ``protocol`` stays a string ("5"), the rest as :func:`_value`."""
    return {k: v if k == "protocol" else _value(v) for k, _, v in (p.partition("=") for p in pairs)}


def _interrupted(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=30.0, help="per rate (default 30)")
    parser.add_argument("--idle", type=float, default=60.0, help="idle phase (default 60)")
    parser.add_argument("--rates", default="100,1000,5000", help="readings/s, comma-separated")
    parser.add_argument(
        "--peers", default=",".join(KINDS), help=f"rows, comma-separated, of {', '.join(KINDS)}"
    )
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--broker-inflight",
        type=int,
        default=1000,
        help="Mosquitto max_inflight_messages (default 1000, as the docs advise; Mosquitto's own is 20)",
    )
    parser.add_argument(
        "--gateway-root", type=Path, default=ROOT, help="the checkout measured (default this one)"
    )
    parser.add_argument("--python", default=sys.executable, help="its interpreter (with its dependencies)")
    parser.add_argument("--name", default="after", help="its name in the table")
    parser.add_argument("--before", type=Path, help="a second checkout, measured in the same run as 'before'")
    parser.add_argument("--before-python", help="its interpreter (default --python)")
    parser.add_argument(
        "--spool",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a bridge.spool setting for the measured checkout (not --before's)",
    )
    parser.add_argument(
        "--kafka",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a bridge.kafka setting for the measured checkout (e.g. linger=0.5)",
    )
    parser.add_argument(
        "--mqtt",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an mqtt setting for the measured checkout (e.g. protocol=5)",
    )
    parser.add_argument("--before-mqtt", action="append", default=[], metavar="KEY=VALUE",
                        help="an mqtt setting for --before's gateway")  # fmt: skip
    parser.add_argument("--log-level", default="info", help="the gateways' log level (default info)")
    parser.add_argument("--else", dest="otherwise", action="store_true",
                        help="the gateways' rules get `else` actions (a command per crossing)")  # fmt: skip
    parser.add_argument("--keep-sessions", action="store_true",
                        help="leave each stopped gateway's persistent MQTT session in the broker (as this "
                        "bench did until 2026-12-04: it queues every later reading)")  # fmt: skip
    parser.add_argument("--suffix", default="", help="--write: bench/results/home-rates-<date>-SUFFIX.md")
    parser.add_argument("--write", action="store_true", help="write bench/results/home-rates-<date>.md")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.rates = [int(r) for r in args.rates.split(",") if r]
    args.kinds = [k.strip() for k in args.peers.split(",") if k.strip()]
    if unknown := [k for k in args.kinds if k not in KINDS]:
        parser.error(f"unknown rows {unknown}: choose from {', '.join(KINDS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    variants = []
    if args.before is not None:
        variants.append(Variant("before", args.before.resolve(), args.before_python or args.python,
                                mqtt=_mqtt_settings(args.before_mqtt)))  # fmt: skip
    spool = {k: _value(v) for k, _, v in (s.partition("=") for s in args.spool)}
    kafka = {k: _value(v) for k, _, v in (s.partition("=") for s in args.kafka)}
    variants.append(Variant(args.name, args.gateway_root.resolve(), args.python, spool, kafka,
                            _mqtt_settings(args.mqtt)))  # fmt: skip
    load0 = os.getloadavg()[0]
    signal.signal(signal.SIGTERM, _interrupted)
    layout, devices = make_layout(100, 100)
    results: dict[Row, list[dict[str, Phase]]] = {}
    notes: list[str] = []
    kinds = list(args.kinds)
    nodered = None
    if "nodered" in kinds:
        try:
            nodered = install()
            notes.append(f"- Node-RED {nodered.version} on node {nodered.node_version}")
        except (NodeRedMissing, subprocess.TimeoutExpired) as exc:
            print(f"Node-RED: {exc}", flush=True)
            notes.append(f"- **Node-RED 4.1: not run**: {exc}")
            kinds.remove("nodered")
    with tempfile.TemporaryDirectory(prefix="edgegw-home-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        print("starting Mosquitto" + (" and Kafka" if "edgegw-eos" in kinds else "") + " ...", flush=True)
        broker, node = start_brokers(stack, work, kafka="edgegw-eos" in kinds,
                                     max_inflight_messages=args.broker_inflight)  # fmt: skip
        bed = peers.Bed(work, broker, node, layout, devices, nodered)
        for k in range(args.rounds):
            # every other round runs the checkouts of a mode in the other order: the machine drifts
            order = variants if k % 2 == 0 else variants[::-1]
            rows: list[tuple[str, Variant | None]] = [
                (kind, v) for kind in kinds if kind in MODE for v in order
            ] + [(kind, None) for kind in kinds if kind not in MODE]
            for kind, v in rows:
                row = (v.name if v is not None else "-", kind)
                print(f"round {k + 1}: {' '.join(row_name(row))}", flush=True)
                try:
                    results.setdefault(row, []).append(run_row(bed, kind, v, args, str(k)))
                except RuntimeError as exc:
                    print(f"  failed: {exc}", flush=True)
                    notes.append(
                        f"- {' '.join(row_name(row))}, round {k + 1}: failed: {str(exc).splitlines()[0]}"
                    )
    text = report(results, args, variants, (load0, os.getloadavg()[0]), notes)
    print()
    print(text)
    if args.write:
        write_result("home-rates", text, f"-{args.suffix}" if args.suffix else "")
    return 0


if __name__ == "__main__":
    mp.set_start_method("spawn", force=True)
    sys.exit(main())
