"""edgegw against its peers, side by side, in one run: the table of issue 16.

    .venv/bin/python -m bench.peers [--quick] [--write]
    .venv/bin/python -m bench.peers --peers bare,edgegw-eos --qos 1 --rates 5000,10000 --seconds 20
    .venv/bin/python -m bench.peers --edgegw before=/work/wt/before:/work/wt/before/.venv/bin/python

Starts a test-bed Mosquitto (``set_tcp_nodelay true``) and, when an exactly-once row is
asked for, a single-node Kafka. The peers run one at a time against that broker, each
with the same shape: 100 sensors (``zigbee2mqtt/t-NNNN``), one rule each, ``temperature >
30`` -> ``{"state":"ON"}`` to ``zigbee2mqtt/act-NNNN/set`` at the QoS of the run:

1. **bare paho subscriber** (``bench.peers_bare``, the reference): parses each reading,
   publishes the command at once; nothing else;
2. **Node-RED 4.1** (no durability; ``bench.peers_nodered``): installed once by npm into
   ``~/.cache/edgegw-bench/node-red``, headless (no editor, no admin API), mqtt in ->
   function -> mqtt out; the row says so when node or npm is missing;
3. **edgegw, spool only**: ``python -m gateway run`` with the spool and no Kafka section
   (``bench.e2e_bench.write_config``'s gateway, 100 devices and 100 rules without ``else``,
   actuators at the run's QoS, log level warning);
4. **edgegw, spool + exactly-once Kafka**: the same with the uplink in exactly-once mode
   (fresh topics per run).

``--edgegw NAME=ROOT:PYTHON`` (repeatable) adds rows 3 and 4 from another checkout
(``cwd`` and ``PYTHONPATH`` its root, its interpreter): before and after from one run.

Per peer and QoS: the peer starts, a probe (a cold then a hot reading of the first sensor,
repeated until its command arrives) says it is ready; VmRSS of each of its processes 2 s
later is its idle RSS. Then per rate (1k, 5k, 10k, 20k, 40k readings/s; quick: 1k-20k,
5 s each), paced publisher processes (one per 10k/s; ``bench.peers_load``, a raw MQTT
publisher: paho's own cost per publish would take CPU from the peer under test) send
``--seconds`` of readings round-robin over the 100 sensors, every 10th reading of each
sensor hot (40 °C, others 20 °C; staggered across sensors, never a sensor's first reading
of a run), hot ones carrying their send time (``time.time_ns``); a subscriber on
``zigbee2mqtt/+/set`` records the arrivals; per sensor the n-th command answers its n-th
hot reading. A rate passes when nothing is lost, p99 < 1 s and the publishers kept up
(>= 95 % of the rate). Rates above 10k/s are skipped after a failure at that QoS.
Per rate also: CPU-seconds per 1,000 readings of the peer's process tree
(``/proc/<pid>/stat`` utime + stime of the peer and its live descendants, plus what it
reaped), from the start of the load until the commands settled. VmRSS of each process
at the end (main and children apart).

Prints the issue's table and a per-rate table (medians with ``--repeat``); ``--write``
writes them to ``bench/results/peers-<date>[-quick].md`` with the machine and versions.
Nothing is asserted. Every process started here is stopped on exit, Ctrl-C included.
The machine is what it is: on a shared 2-core box the figures are indicative.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import multiprocessing as mp
import os
import queue
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench import proctree
from bench.brokers import start_brokers
from bench.e2e_bench import (
    CommandListener,
    Layout,
    edit_config,
    forget_session,
    gateway_argv,
    gateway_env,
    make_layout,
    make_topics,
    write_config,
)
from bench.machine import ROOT, git_rev, machine_lines, write_result
from bench.peers_load import COLD, HOT, LoadJob, reading, run_job
from bench.peers_nodered import NodeRed, NodeRedMissing, install, prepare
from bench.peers_report import (
    Checkout,
    PeerResult,
    RateRun,
    combine,
    detail_table,
    match,
    parse_edgegw,
    summary_table,
)
from simulators.testbed import KafkaNode, Mosquitto, free_port

RATES = (1000, 5000, 10_000, 20_000, 40_000)
QUICK_RATES = (1000, 5000, 10_000, 20_000)
ALWAYS_RUN = 10_000  # rates up to this one run even after a failure (the table's columns)
KINDS = ("bare", "nodered", "edgegw-spool", "edgegw-eos")
PREFIX = "zigbee2mqtt"
DEVICES = 100
SETTLE_S = 10.0  # done when no command arrived for this long (or all did): a held peer is late, not lossy
BARE = "import sys; from bench.peers_bare import main; sys.exit(main(sys.argv[1:]))"


# ---------------------------------------------------------------------- peers
@dataclass(frozen=True)
class Peer:
    kind: str  # one of KINDS
    label: str
    checkout: Checkout | None = None  # edgegw rows


class PeerProcess:
    """A peer's process: output to a log file, SIGTERM (then SIGKILL) on stop."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str], log: Path) -> None:
        self.log_path = log
        self._log: IO[str] = log.open("w")
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, cwd=cwd, env=env,
                                     text=True)  # fmt: skip
        self.client_ids: list[str] = []  # persistent MQTT sessions to forget after the stop
        self._seen = 0

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def new_output(self) -> list[str]:
        """Lines the peer logged since the last call (warnings and errors: edgegw runs at
        level warning, Node-RED at warn)."""
        try:
            with self.log_path.open(errors="replace") as log:
                log.seek(self._seen)
                text = log.read()
                self._seen = log.tell()
        except OSError:
            return []
        return [line[:300] for line in text.splitlines() if line.strip()]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                for p in reversed(proctree.descendants(self.proc.pid)):
                    with contextlib.suppress(OSError):
                        os.kill(p, signal.SIGKILL)
                self.proc.wait()
        self._log.close()


@dataclass
class Bed:
    work: Path
    broker: Mosquitto
    node: KafkaNode | None
    layout: Layout
    devices: list[dict[str, Any]]
    nodered: NodeRed | None


def edgegw_config(bed: Bed, path: Path, qos: int, *, kafka: bool, client_id: str) -> None:
    """e2e_bench's gateway config for this bench's shape: no ``else`` (one command per hot
    reading), actuators at ``qos``, no Kafka section for spool only, logs at warning."""
    topics = make_topics(bed.node, f"peers-{uuid.uuid4().hex[:8]}") if kafka and bed.node else {}
    state = path.with_suffix(".state")
    write_config(path, bed.layout, bed.devices, mqtt_port=bed.broker.port,
                 bootstrap=bed.node.bootstrap if kafka and bed.node else "", topics=topics,
                 http_port=free_port(), state=state)  # fmt: skip
    edit_config(
        path, client_id=client_id, log_level="warning", otherwise=False, actuator_qos=qos, kafka=kafka
    )


def start_peer(bed: Bed, peer: Peer, qos: int) -> PeerProcess:
    tag = f"{peer.kind}-{peer.checkout.name if peer.checkout else ''}-q{qos}-{uuid.uuid4().hex[:4]}"
    log = bed.work / f"{tag}.log"
    if peer.kind == "bare":
        argv = [sys.executable, "-c", BARE, "--port", str(bed.broker.port), "--qos", str(qos)]
        return PeerProcess(argv, ROOT, gateway_env(ROOT), log)
    if peer.kind == "nodered":
        assert bed.nodered is not None
        user_dir = bed.work / tag
        prepare(user_dir, bed.broker.port, free_port(), qos)
        return PeerProcess(bed.nodered.command(user_dir), user_dir, dict(os.environ), log)
    assert peer.checkout is not None
    config = bed.work / f"{tag}.json"
    client_id = f"edgegw-peers-{uuid.uuid4().hex[:6]}"
    edgegw_config(bed, config, qos, kafka=peer.kind == "edgegw-eos", client_id=client_id)
    argv = gateway_argv(str(peer.checkout.python), config)
    proc = PeerProcess(argv, peer.checkout.root, gateway_env(peer.checkout.root), log)
    proc.client_ids = [client_id, f"{client_id}-cmd"]
    return proc


def stop_peer(bed: Bed, proc: PeerProcess) -> None:
    proc.stop()
    for client_id in proc.client_ids:  # or the broker queues every later reading for it
        with contextlib.suppress(Exception):
            forget_session(bed.broker.port, client_id)


def command_topic(device: str) -> str:
    return f"{PREFIX}/{Layout.actuator(device)}/set"


class Probed(Protocol):
    def alive(self) -> bool: ...

    def tail(self, lines: int = 20) -> str: ...


def probe(port: int, device: str, proc: Probed, qos: int, timeout: float = 120.0) -> float:
    """A cold then a hot reading of ``device``, every 2 s until its command arrives: the
    peer is subscribed and its rule path works (whatever it logs). Seconds it took."""
    listener = CommandListener(port, [command_topic(device)])
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-probe-{uuid.uuid4().hex[:6]}")
    client.connect("127.0.0.1", port)
    client.loop_start()
    began = time.monotonic()
    try:
        while time.monotonic() - began < timeout:
            if not proc.alive():
                raise RuntimeError(f"the peer exited:\n{proc.tail()}")
            client.publish(f"{PREFIX}/{device}", reading(COLD), qos=qos)
            client.publish(f"{PREFIX}/{device}", reading(HOT), qos=qos)
            step = time.monotonic() + 2.0
            while time.monotonic() < step:
                if listener.count():
                    return time.monotonic() - began
                time.sleep(0.05)
        raise RuntimeError(f"no command from the peer within {timeout:g} s:\n{proc.tail()}")
    finally:
        client.disconnect()
        client.loop_stop()
        listener.close()


# ---------------------------------------------------------------------- load (child processes)
def _load_child(job: LoadJob, ready: Any, go: Any, out: Any) -> None:
    def connected() -> None:
        ready.put(os.getpid())
        go.wait(60)

    out.put(run_job(job, command_topic, connected))


@dataclass(frozen=True)
class Load:
    sent: int
    achieved: float
    sends: dict[str, list[int]]


class Loaders:
    """One process per job, connected and waiting for :meth:`start`; killed on exit."""

    def __init__(self, jobs: list[LoadJob]) -> None:
        ctx = mp.get_context("spawn")
        self._ready: Any = ctx.Queue()
        self._out: Any = ctx.Queue()
        self._go = ctx.Event()
        self.procs = [
            ctx.Process(target=_load_child, args=(job, self._ready, self._go, self._out), daemon=True)
            for job in jobs
        ]

    def __enter__(self) -> Loaders:
        try:
            for p in self.procs:
                p.start()
            for _ in self.procs:
                self._ready.get(timeout=60)
        except BaseException as exc:
            self.__exit__(exc)
            raise
        return self

    def start(self) -> None:
        self._go.set()

    def results(self) -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = []
        while len(got) < len(self.procs):
            try:
                got.append(self._out.get(timeout=1.0))
            except queue.Empty:
                if not any(p.is_alive() for p in self.procs) and self._out.empty():
                    raise RuntimeError("a publisher process died") from None
        return got

    def __exit__(self, failed: object = None, *_: object) -> None:
        for p in self.procs:
            if failed is None and p.pid is not None:
                p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join(timeout=5)


def load_jobs(
    port: int, devices: list[str], rate: int, seconds: float, qos: int, per_process: int
) -> list[LoadJob]:
    n = max(1, min(len(devices), math.ceil(rate / per_process)))
    shards = [devices[k::n] for k in range(n)]
    share = [len(shard) / len(devices) for shard in shards]
    return [
        LoadJob(port, shard, rate * f, round(rate * seconds * f), qos)
        for shard, f in zip(shards, share, strict=True)
    ]


# ---------------------------------------------------------------------- runs
def run_rate(bed: Bed, proc: PeerProcess, qos: int, rate: int, seconds: float, per_process: int) -> RateRun:
    jobs = load_jobs(bed.broker.port, bed.layout.devices, rate, seconds, qos, per_process)
    listener = CommandListener(bed.broker.port, [f"{PREFIX}/+/set"])
    try:
        with Loaders(jobs) as load:
            cpu0 = proctree.cpu_seconds(proc.pid)
            load.start()
            results = load.results()
        sends: dict[str, list[int]] = {}
        for res in results:
            sends.update(res["sends"])
        expected = sum(len(v) for v in sends.values())
        last, seen = time.monotonic(), listener.count()
        deadline = time.monotonic() + 120
        while seen < expected and time.monotonic() - last < SETTLE_S and time.monotonic() < deadline:
            time.sleep(0.1)
            if (now := listener.count()) != seen:
                last, seen = time.monotonic(), now
        cpu1 = proctree.cpu_seconds(proc.pid)
    finally:
        listener.close()
    sent = sum(r["sent"] for r in results)
    achieved = sent / max(r["elapsed"] for r in results)
    arrivals = {topic: [t for t, _ in got] for topic, got in listener.arrivals.items()}
    return RateRun.of(qos, rate, achieved, match(sends, arrivals), (cpu1 - cpu0) / (sent / 1000))


def run_peer(
    bed: Bed, peer: Peer, qos: int, rates: list[int], args: argparse.Namespace, result: PeerResult
) -> None:
    proc = start_peer(bed, peer, qos)
    try:
        took = probe(bed.broker.port, bed.layout.devices[0], proc, qos)
        time.sleep(2.0)
        idle = proctree.rss_mib(proc.pid)
        print(f"  {peer.label}, QoS {qos}: ready after {took:.1f} s; idle RSS "
              + ", ".join(f"{k} {v:.1f} MiB" for k, v in idle.items()), flush=True)  # fmt: skip
        failed = False
        for rate in rates:
            if failed and rate > ALWAYS_RUN:
                print(f"    {rate:,}/s skipped (a lower rate failed)", flush=True)
                continue
            repeats = []
            for _ in range(args.repeat):
                run = run_rate(bed, proc, qos, rate, args.seconds, args.per_process)
                repeats.append(run)
                verdict = "pass" if run.passed else "FAIL: " + run.why
                print(
                    f"    {rate:,}/s: published {run.achieved:,.0f}/s, "
                    f"commands {run.arrived:,}/{run.expected:,} (extra {run.extra}), "
                    f"p50 {run.p50:.2f} ms, p99 {run.p99:.2f} ms, "
                    f"max {run.worst:.2f} ms, CPU {run.cpu_per_k:.3f} s/1k -> {verdict}",
                    flush=True,
                )
                if not run.passed and (said := proc.new_output()):
                    print("      the peer said: " + "\n      ".join(said[-5:]), flush=True)
                if not proc.alive():
                    raise RuntimeError(f"the peer exited ({proc.proc.returncode}):\n{proc.tail()}")
                time.sleep(2.0)
            run = combine(repeats)
            result.runs.append(run)
            failed = failed or not run.passed
        end = proctree.rss_mib(proc.pid)
        result.note_rss(idle, end)
    finally:
        stop_peer(bed, proc)


def peers_of(kinds: list[str], checkouts: list[Checkout]) -> list[Peer]:
    out: list[Peer] = []
    for kind in kinds:
        if kind == "bare":
            out.append(Peer(kind, "bare paho subscriber (reference)"))
        elif kind == "nodered":
            out.append(Peer(kind, "Node-RED 4.1 (no durability)"))
        else:
            what = "spool only" if kind == "edgegw-spool" else "spool + exactly-once Kafka"
            for co in checkouts:
                name = "edgegw" if co.name == "this" else f"edgegw {co.name}"
                out.append(Peer(kind, f"{name}, {what}", co))
    return out


# ---------------------------------------------------------------------- report
def _versions(bed: Bed, checkouts: list[Checkout]) -> list[str]:
    lines = machine_lines()
    if bed.nodered is not None:
        lines.append(f"- Node-RED {bed.nodered.version} on node {bed.nodered.node_version}")
    for co in checkouts:
        git = ["git", "rev-parse", "--short", "HEAD"]
        rev = subprocess.run(git, capture_output=True, text=True, check=False, cwd=co.root).stdout.strip()
        rev = rev or "?"
        lines.append(f"- edgegw {co.name}: {co.root} at {rev}, {co.python}")
    return lines


def report(results: list[PeerResult], args: argparse.Namespace, header: list[str]) -> str:
    lines = [
        f"# edgegw and its peers, {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC",
        "",
        f"`python -m bench.peers {' '.join(args.argv)}`",
        "",
        *header,
        f"- code: {git_rev()}; load average (1 min) at the start {args.load0:.2f}, at the end "
        f"{os.getloadavg()[0]:.2f} (other work on the machine perturbs every figure)",
        f'- workload: {DEVICES} sensors, one rule each (`temperature > 30` -> `{{"state":"ON"}}` to '
        f"`zigbee2mqtt/act-NNNN/set`), every 10th reading of each sensor hot; {args.seconds:g} s per rate, "
        f"{args.repeat} run(s) per rate (medians); a rate passes when no command is lost, p99 < 1 s and the "
        "publishers kept up (>= 95 %); latency = sensor publish to command arrival",
        "",
        summary_table(results),
        "",
        "Per rate (CPU: the peer's processes, children included, per 1,000 readings):",
        "",
        detail_table(results),
        "",
    ]
    lines += [f"- {r.label}: {r.note}" for r in results if r.note]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------- main
def _interrupted(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _ints(text: str) -> list[int]:
    return [int(float(x.strip().lower().replace("k", "e3"))) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--peers", default=",".join(KINDS), help=f"comma-separated, of {', '.join(KINDS)}")
    parser.add_argument("--qos", default="0,1", help="comma-separated QoS levels (default 0,1)")
    parser.add_argument(
        "--rates", help="readings/s, comma-separated (default 1k,5k,10k,20k,40k; quick 1k-20k)"
    )
    parser.add_argument("--seconds", type=float, help="per rate (default 20, quick 5)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per rate (medians)")
    parser.add_argument("--quick", action="store_true", help="rates 1k-20k, 5 s each")
    parser.add_argument("--per-process", type=int, default=10_000, help="readings/s per publisher process")
    parser.add_argument("--edgegw", action="append", default=[], metavar="NAME=ROOT:PYTHON",
                        help="add edgegw rows from another checkout (repeatable)")  # fmt: skip
    parser.add_argument(
        "--no-this", action="store_true", help="no edgegw rows of this tree (only --edgegw ones)"
    )
    parser.add_argument(
        "--broker-autosave", type=int, default=1, metavar="S",
        help="Mosquitto's autosave_interval (the test bed's 1 s; Debian's default is 1800)",
    )  # fmt: skip
    parser.add_argument("--write", action="store_true", help="write bench/results/peers-<date>[-quick].md")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.kinds = [k.strip() for k in args.peers.split(",") if k.strip()]
    unknown = [k for k in args.kinds if k not in KINDS]
    if unknown:
        parser.error(f"unknown peers {unknown}: choose from {', '.join(KINDS)}")
    args.qos_levels = _ints(args.qos)
    if any(q not in (0, 1) for q in args.qos_levels):
        parser.error("--qos takes 0 and/or 1")
    args.rate_list = _ints(args.rates) if args.rates else list(QUICK_RATES if args.quick else RATES)
    args.seconds = args.seconds or (5.0 if args.quick else 20.0)
    try:
        extra = [parse_edgegw(spec) for spec in args.edgegw]
    except ValueError as exc:
        parser.error(str(exc))
    this = [] if args.no_this else [Checkout("this", ROOT, Path(sys.executable))]
    args.checkouts = this + extra
    args.load0 = os.getloadavg()[0]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    peers = peers_of(args.kinds, args.checkouts)
    results = {p.label: PeerResult(p.label) for p in peers}
    signal.signal(signal.SIGTERM, _interrupted)  # a SIGTERM cleans up like Ctrl-C
    with tempfile.TemporaryDirectory(prefix="edgegw-peers-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        nodered = None
        if "nodered" in args.kinds:
            try:
                nodered = install()
            except (NodeRedMissing, subprocess.TimeoutExpired) as exc:
                print(f"Node-RED: {exc}", flush=True)
                for p in peers:
                    if p.kind == "nodered":
                        results[p.label].note = f"not run: {exc}"
                peers = [p for p in peers if p.kind != "nodered"]
        print(
            "starting Mosquitto" + (" and Kafka" if "edgegw-eos" in args.kinds else "") + " ...", flush=True
        )
        broker, node = start_brokers(stack, work, kafka="edgegw-eos" in args.kinds,
                                     autosave_interval_s=args.broker_autosave)  # fmt: skip
        layout, devices = make_layout(DEVICES, DEVICES)
        bed = Bed(work, broker, node, layout, devices, nodered)
        header = _versions(bed, args.checkouts)
        print("\n".join(header), flush=True)
        for qos in args.qos_levels:
            for peer in peers:
                try:
                    run_peer(bed, peer, qos, args.rate_list, args, results[peer.label])
                except RuntimeError as exc:
                    print(f"  {peer.label}, QoS {qos}: {exc}", flush=True)
                    results[peer.label].note += f" QoS {qos}: {str(exc).splitlines()[0]}"
    text = report(list(results.values()), args, header)
    print()
    print(text)
    if args.write:
        write_result("peers", text, "-quick" if args.quick else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
