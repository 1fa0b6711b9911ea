"""CPU, disk writes and latency of ``edgegw run`` at the rates a house sees (issue 16, item 4).

    .venv/bin/python -m bench.home_rates [--seconds 30] [--idle 60] [--write]
    .venv/bin/python -m bench.home_rates --before /path/to/old/checkout [--before-python PY]

Starts a test-bed Mosquitto (``set_tcp_nodelay true``) and a single-node Kafka, writes the
workload of issue 16 (100 Zigbee2MQTT temperature sensors, a rule ``temperature > 30`` on
each commanding its own actuator; the configs of ``bench.e2e_bench``) and runs
``python -m gateway run`` of each checkout (this one, "after"; ``--before DIR``, "before")
in two modes: spool only, and spool + exactly-once Kafka uplink. Each gateway gets a
fresh state directory (and fresh topics), then:

1. **idle** (``--idle`` s, no readings): CPU seconds per minute, voluntary context
   switches per second (how often its threads wake), disk bytes written.
2. **100, 1,000 and 5,000 readings/s** (``--seconds`` s each, one paced publisher process,
   QoS 1): every 10th message is one sensor alternating across its threshold (a command
   each time, its send time in the payload); the other 9 go round the other 98 sensors,
   below their thresholds. Measured: CPU seconds per 1,000 readings, disk bytes written
   per reading against the MQTT payload bytes, spool commits per second (when ``/metrics``
   has ``edgegw_spool_commits_total``), command latency (sensor publish to command
   arrival) p50/p99, the spool's submit-to-durable p50/p99 (what a QoS 1 PUBACK waits,
   ``edgegw_spool_durable_p*_ms``: recent groups) and CPU seconds per thread name
   (``edgegw-spool``, ``edgegw-uplink``, librdkafka's ``rdk:*``, the event loop).

CPU is utime + stime from ``/proc/<pid>/stat`` of the gateway and every live descendant
(an uplink process, when there is one), plus the children it waited for; disk bytes are
``write_bytes`` of ``/proc/<pid>/io`` summed the same way. ``--rounds`` repeats the whole
sequence (variants interleaved); the table gives medians over rounds. Prints a markdown
table; ``--write`` writes it to ``bench/results/home-rates-<date>.md``. Nothing is
asserted. Every process started here is stopped on exit.
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
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.e2e_backlog import summarise
from bench.e2e_bench import (
    CommandListener,
    Gateway,
    Layout,
    PubJob,
    _payload,
    make_layout,
    make_topics,
    metric,
    publishers,
    uplink_state,
    wait_metrics,
    write_config,
)
from bench.machine import ROOT, git_rev, machine_lines, write_result
from simulators.testbed import KafkaNode, Mosquitto, free_port

RATES = (100, 1000, 5000)
MODES = ("spool", "kafka")
TICK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------- /proc
def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{p}/task").iterdir():
                with contextlib.suppress(OSError):
                    todo += [int(c) for c in (task / "children").read_text().split()]
    return out


def tree_cpu(pid: int) -> float:
    """utime + stime of ``pid`` and its live descendants, plus the children they waited for."""
    total = 0
    for p in _descendants(pid):
        with contextlib.suppress(OSError):
            rest = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(rest[11]) + int(rest[12]) + int(rest[13]) + int(rest[14])
    return total / TICK


def tree_io(pid: int) -> int:
    total = 0
    for p in _descendants(pid):
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{p}/io").read_text().splitlines():
                if line.startswith("write_bytes:"):
                    total += int(line.split()[1])
    return total


def tree_wakeups(pid: int) -> int:
    """Voluntary context switches of every thread of the tree (a thread sleeping and waking)."""
    total = 0
    for p in _descendants(pid):
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{p}/task").iterdir():
                with contextlib.suppress(OSError, ValueError):
                    for line in (task / "status").read_text().splitlines():
                        if line.startswith("voluntary_ctxt_switches"):
                            total += int(line.split()[1])
    return total


def tree_threads(pid: int) -> dict[str, float]:
    """CPU seconds per thread name over the tree (``rdk:*`` summed as librdkafka)."""
    out: dict[str, float] = {}
    for p in _descendants(pid):
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{p}/task").iterdir():
                try:
                    name = (task / "comm").read_text().strip()
                    rest = (task / "stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                name = "librdkafka" if name.startswith("rdk") else "event loop" if name == "python" else name
                out[name] = out.get(name, 0.0) + (int(rest[11]) + int(rest[12])) / TICK
    return out


# ---------------------------------------------------------------------- the gateway of a checkout
@dataclass(frozen=True)
class Variant:
    name: str
    root: Path
    python: str
    spool: dict[str, Any] = field(default_factory=dict)
    kafka: dict[str, Any] = field(default_factory=dict)


class CheckoutGateway(Gateway):
    """:class:`bench.e2e_bench.Gateway` started from another checkout with its own interpreter."""

    def __init__(self, variant: Variant, config: Path, http_port: int) -> None:
        self.http_port = http_port
        self.spawned = time.monotonic()
        env = {**os.environ, "PYTHONPATH": str(variant.root)}
        env.pop("NOTIFY_SOCKET", None)
        self.proc = subprocess.Popen(
            [variant.python, "-m", "gateway", "run", "--config", str(config), "--log-format", "json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=variant.root,
            env=env,
        )
        self.ready = threading.Event()
        self.ready_seconds = 0.0
        self.ready_at = 0.0
        self.tail: list[str] = []
        self.scrape_failures = 0
        self.slowest_scrape = 0.0
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()


# ---------------------------------------------------------------------- one phase
@dataclass
class Phase:
    readings: float = 0.0
    seconds: float = 0.0
    cpu: float = 0.0
    write_bytes: float = 0.0
    payload_bytes: float = 0.0
    wakeups: float = 0.0
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

    @property
    def payload_per_event(self) -> float:
        return self.payload_bytes / self.readings if self.readings else float("nan")


class Probe:
    """Before/after figures of a gateway process tree and its /metrics."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.t = time.monotonic()
        self.cpu = tree_cpu(gw.pid)
        self.io = tree_io(gw.pid)
        self.wake = tree_wakeups(gw.pid)
        self.threads = tree_threads(gw.pid)
        self.series = gw.scrape() or {}

    def phase(self, before: Probe) -> Phase:
        p = Phase()
        p.seconds = self.t - before.t
        p.cpu = self.cpu - before.cpu
        p.write_bytes = self.io - before.io
        p.wakeups = self.wake - before.wake
        p.readings = metric(self.series, "edgegw_readings_total") - metric(
            before.series, "edgegw_readings_total"
        )
        if any(k.startswith("edgegw_spool_commits_total") for k in self.series):
            p.commits = metric(self.series, "edgegw_spool_commits_total") - metric(
                before.series, "edgegw_spool_commits_total"
            )
        for name, cpu in self.threads.items():
            p.threads[name] = cpu - before.threads.get(name, 0.0)
        for q in ("p50", "p99"):
            key = f"edgegw_spool_durable_{q}_ms"
            if key in self.series:
                setattr(p, f"durable_{q}", self.series[key])
        return p


def paced(gw: Gateway, port: int, layout: Layout, rate: int, seconds: float) -> Phase:
    device = layout.latency[0]
    others = [d for d in layout.devices if d != device]
    topic = f"zigbee2mqtt/{Layout.actuator(device)}/set"
    listener = CommandListener(port, [topic])
    count = int(rate * seconds)
    job = PubJob(port, others, frozenset(), count, float(rate), lat_device=device)
    before = Probe(gw)
    try:
        with publishers([job]) as results:
            sends: list[int] = results[0]["sends"]
            elapsed: float = results[0]["elapsed"]
        deadline = time.monotonic() + 10
        while len(listener.arrivals.get(topic, [])) < len(sends) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # the last group commits (at most commit_max_delay) and ships
    finally:
        listener.close()
    phase = Probe(gw).phase(before)
    lat = summarise(sends, listener.arrivals.get(topic, []), count, elapsed)
    phase.p50, phase.p99, phase.seen, phase.sent = lat.p50, lat.p99, lat.seen, lat.sent
    body = len(_payload(20.0 + 1e-6))  # the ~40-byte JSON of the 9 in 10 background readings
    phase.payload_bytes = phase.readings * body
    return phase


def idle(gw: Gateway, seconds: float) -> Phase:
    before = Probe(gw)
    time.sleep(seconds)
    return Probe(gw).phase(before)


# ---------------------------------------------------------------------- one gateway
@dataclass
class Bed:
    work: Path
    broker: Mosquitto
    node: KafkaNode
    layout: Layout
    devices: list[dict[str, Any]]


def config_for(bed: Bed, name: str, mode: str, variant: Variant) -> tuple[Path, int]:
    http_port = free_port()
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", name)
    name = safe
    topics = make_topics(bed.node, f"home-{safe}-{uuid.uuid4().hex[:6]}")
    path = bed.work / f"edgegw-{name}.json"
    write_config(path, bed.layout, bed.devices, mqtt_port=bed.broker.port, bootstrap=bed.node.bootstrap,
                 topics=topics, http_port=http_port, state=bed.work / f"state-{name}")  # fmt: skip
    config = json.loads(path.read_text())
    if mode == "spool":
        config["bridge"].pop("kafka")
    else:
        config["bridge"]["kafka"].update(variant.kafka)
    config["bridge"]["spool"].update(variant.spool)
    config["mqtt"]["client_id"] = f"edgegw-home-{name}"  # a fresh broker session per gateway
    path.write_text(json.dumps(config, indent=1) + "\n")
    return path, http_port


def run_gateway(
    bed: Bed, variant: Variant, mode: str, args: argparse.Namespace, tag: str
) -> dict[str, Phase]:
    name = f"{variant.name}-{mode}-{tag}"
    config, http_port = config_for(bed, name, mode, variant)
    gw = CheckoutGateway(variant, config, http_port)
    out: dict[str, Phase] = {}
    try:
        gw.wait_ready()
        if mode == "kafka":
            wait_metrics(gw, "the uplink to be up", lambda m: uplink_state(m) == "up", timeout=60)
        time.sleep(3.0)  # start-up work (first checkpoint, producer init) out of the idle figure
        print(f"  {name}: idle {args.idle:g} s", flush=True)
        out["idle"] = idle(gw, args.idle)
        for rate in args.rates:
            print(f"  {name}: {rate}/s for {args.seconds:g} s", flush=True)
            out[str(rate)] = paced(gw, bed.broker.port, bed.layout, rate, args.seconds)
    finally:
        gw.stop()
    return out


# ---------------------------------------------------------------------- report
def _med(values: list[float]) -> float:
    values = [v for v in values if v == v]
    return statistics.median(values) if values else float("nan")


def _fmt(v: float | None, spec: str) -> str:
    return "n/a" if v is None or v != v else format(v, spec)


def report(results: dict[tuple[str, str], list[dict[str, Phase]]], args: argparse.Namespace,
           variants: list[Variant], load: tuple[float, float]) -> str:  # fmt: skip
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        f"# CPU, disk writes and latency at home rates (issue 16, item 4), {when}",
        "",
        "    .venv/bin/python -m bench.home_rates " + " ".join(args.argv),
        "",
        f"Run from {git_rev()}. Variants: "
        + "; ".join(f"**{v.name}** = {v.root} ({_rev(v.root)})" for v in variants)
        + f". 100 sensors, a rule each, every 10th reading hot (a command); QoS 1; {args.seconds:g} s "
        f"per rate, {args.idle:g} s idle; {args.rounds} round(s), medians. Load average {load[0]:.2f} at the "
        f"start, {load[1]:.2f} at the end: a shared 2-core machine, figures are indicative only.",
        "",
        *machine_lines(),
        "",
        "CPU: utime+stime of the gateway process tree. Disk: `write_bytes` (`/proc/<pid>/io`) per "
        "reading, and as a multiple of the MQTT payload (~40 bytes per reading). Commits: "
        "`edgegw_spool_commits_total` (n/a where /metrics lacks it). PUBACK wait: the spool's "
        "submit-to-durable p50/p99 (recent groups). Latency: sensor publish to command arrival.",
        "",
        "| variant | mode | phase | CPU s / 1k readings | CPU s / min | wakeups / s | disk bytes / reading "
        "(x payload) | commits / s | command p50 / p99 ms | PUBACK wait p50 / p99 ms | commands seen |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for v in variants:
        for mode in args.modes:
            runs = results.get((v.name, mode), [])
            if not runs:
                continue
            for ph in ["idle", *map(str, args.rates)]:
                got = [r[ph] for r in runs if ph in r]
                if not got:
                    continue
                cpu_k = _med([p.cpu_per_k for p in got])
                cpu_min = _med([p.cpu / p.seconds * 60 for p in got])
                wake = _med([p.wakeups / p.seconds for p in got])
                bpe = _med([p.bytes_per_event for p in got])
                xp = _med([p.write_bytes / p.payload_bytes if p.payload_bytes else float("nan") for p in got])
                commits = [p.commits / p.seconds for p in got if p.commits is not None]
                c = _med(commits) if commits else None
                if ph == "idle":
                    disk = f"{_med([p.write_bytes / p.seconds for p in got]):,.0f} B/s"
                    lat = "-"
                    seen = "-"
                else:
                    disk = f"{bpe:,.0f} ({xp:.1f}x)"
                    lat = f"{_med([p.p50 for p in got]):.2f} / {_med([p.p99 for p in got]):.2f}"
                    seen = f"{sum(p.seen for p in got)}/{sum(p.sent for p in got)}"
                d50 = [p.durable_p50 for p in got if p.durable_p50 is not None]
                d99 = [p.durable_p99 for p in got if p.durable_p99 is not None]
                dur = f"{_med(d50):.1f} / {_med(d99):.1f}" if d50 and d99 else "n/a"
                label = "idle" if ph == "idle" else f"{int(ph):,}/s"
                lines.append(
                    f"| {v.name} | {mode} | {label} | {'-' if ph == 'idle' else _fmt(cpu_k, '.3f')} | "
                    f"{cpu_min:.2f} | {wake:,.0f} | {disk} | {_fmt(c, ',.1f')} | {lat} | {dur} | {seen} |"
                )
    lines += ["", "CPU seconds per 1,000 readings by thread (medians):", ""]
    for v in variants:
        for mode in args.modes:
            for ph in map(str, args.rates):
                got = [r[ph] for r in results.get((v.name, mode), []) if ph in r]
                if not got:
                    continue
                names = sorted({n for p in got for n in p.threads})
                parts = []
                for n in names:
                    share = _med([p.threads.get(n, 0.0) / p.readings * 1000 for p in got if p.readings])
                    if share >= 0.005:
                        parts.append(f"{n} {share:.3f}")
                lines.append(f"- {v.name}, {mode}, {int(ph):,}/s: " + ", ".join(parts))
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


def _interrupted(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=30.0, help="per rate (default 30)")
    parser.add_argument("--idle", type=float, default=60.0, help="idle phase (default 60)")
    parser.add_argument("--rates", default="100,1000,5000", help="readings/s, comma-separated")
    parser.add_argument("--modes", default="spool,kafka", help="spool (no Kafka), kafka (exactly-once)")
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
    parser.add_argument("--write", action="store_true", help="write bench/results/home-rates-<date>.md")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.rates = [int(r) for r in args.rates.split(",") if r]
    args.modes = [m for m in args.modes.split(",") if m]
    variants = []
    if args.before is not None:
        variants.append(Variant("before", args.before.resolve(), args.before_python or args.python))
    spool = {k: _value(v) for k, _, v in (s.partition("=") for s in args.spool)}
    kafka = {k: _value(v) for k, _, v in (s.partition("=") for s in args.kafka)}
    variants.append(Variant(args.name, args.gateway_root.resolve(), args.python, spool, kafka))
    load0 = os.getloadavg()[0]
    signal.signal(signal.SIGTERM, _interrupted)
    layout, devices = make_layout(100, 100)
    results: dict[tuple[str, str], list[dict[str, Phase]]] = {}
    with tempfile.TemporaryDirectory(prefix="edgegw-home-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        print("starting Mosquitto and Kafka ...", flush=True)
        broker = Mosquitto(work / "mqtt", max_inflight_messages=args.broker_inflight)
        with broker.config_path.open("a") as conf:
            conf.write("set_tcp_nodelay true\n")
        stack.callback(broker.stop)
        broker.start()
        node = KafkaNode(work / "kafka")
        stack.callback(node.stop)
        node.start()
        bed = Bed(work, broker, node, layout, devices)
        for k in range(args.rounds):
            for mode in args.modes:
                for v in variants:
                    print(f"round {k + 1}: {v.name}, {mode}", flush=True)
                    results.setdefault((v.name, mode), []).append(run_gateway(bed, v, mode, args, str(k)))
    text = report(results, args, variants, (load0, os.getloadavg()[0]))
    print()
    print(text)
    if args.write:
        write_result("home-rates", text)
    return 0


if __name__ == "__main__":
    mp.set_start_method("spawn", force=True)
    sys.exit(main())
