"""Where the memory of ``edgegw run`` goes: VmRSS idle, after a drain, and an import breakdown.

    .venv/bin/python -m bench.memory_bench                  # ~1-2 minutes: 60k readings
    .venv/bin/python -m bench.memory_bench --imports-only   # seconds: no brokers
    .venv/bin/python -m bench.memory_bench --env MALLOC_ARENA_MAX=8 --env EDGEGW_MALLOC_TRIM=0
    .venv/bin/python -m bench.memory_bench --gateway-root ../before --python ../before/.venv/bin/python

``--gateway-root DIR`` (repeatable; ``--python PATH`` for each, default this interpreter)
measures another checkout in the same run, on the same brokers: its imports and its idle
VmRSS beside this tree's (the drain runs for this tree only).

Same set-up as ``bench.e2e_bench`` (its functions, imported): a test-bed Mosquitto and a
single-node Kafka, 1000 Zigbee2MQTT sensors, 100 threshold rules, the spool, the Kafka
uplink in exactly-once mode, ``python -m gateway run`` with JSON logs. Then:

1. **Imports**: a fresh interpreter imports, in a fixed order, what ``edgegw run`` imports
   (third-party packages first, then edgegw's); VmRSS and the module count after each
   step. The step figures depend on the order (a package's dependencies are charged to
   whichever imports them first); the total does not.
2. **Idle**: the gateway starts and gets READY; after ``--settle`` seconds, VmRSS and
   its split (``/proc/<pid>/smaps``: Python's and C's heap, thread stacks and arenas,
   shared libraries), and the thread count. The main process and its child processes
   (the uplink, when ``edgegw run`` starts one: ``/proc/<pid>/task/*/children``) are
   counted separately.
3. **Drain**: the gateway stops; ``--messages`` QoS 1 readings are preloaded into its
   persistent session (publisher processes from ``bench.e2e_bench``); it starts again
   and drains them through rules, spool and Kafka. VmRSS and VmHWM once Kafka has them
   all (``edgegw_forwarder_sent_total``) and the spool is empty, and again after
   ``--settle`` seconds idle.

``--env NAME=VALUE`` (repeatable) is set in the gateway's environment, to compare
allocator settings on the same machine and load. Prints a markdown report; nothing is
asserted and nothing is written unless ``--write``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from bench import proctree
from bench.e2e_bench import Gateway, Layout, burst_jobs, make_layout, publishers, write_config
from bench.machine import ROOT, git_rev, machine_lines, write_result
from simulators.testbed import KafkaNode, Mosquitto, free_port

TARGET_MIB = 50.0

# What `edgegw run` imports, in the order they are charged: interpreter parts first, then
# each third-party package, then edgegw (gateway.cli, `run`'s own imports, then what the
# runtime imports late: HTTP, metrics, the Kafka uplink).
IMPORT_STEPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("asyncio, ssl, sqlite3, json, logging", ("asyncio", "ssl", "sqlite3", "json", "logging")),
    ("importlib.metadata", ("importlib.metadata",)),
    ("pydantic", ("pydantic", "pydantic.main")),
    ("structlog (as `edgegw` imports it: without rich)", ("gateway.cli:_import_structlog",)),
    ("paho-mqtt", ("paho.mqtt.client",)),
    ("edgegw: gateway.cli, `run` parsed", ("gateway.cli:build_parser",)),
    ("edgegw: run (config, rules, devices, bridge, runtime)",
     ("gateway.config", "gateway.identity", "common.logs", "gateway.runtime", "gateway.sdnotify")),
    ("edgegw: http, metrics", ("gateway.http", "gateway.metrics")),
    ("the config (1000 devices, 100 rules), loaded as `run` loads it", ("@config",)),
    ("the Kafka uplink: bridge.kafka (confluent_kafka)", ("bridge.kafka",)),
)  # fmt: skip
"""Third-party packages get no step of their own unless every tree imports them in `run`:
whatever else `run` imports is charged to the edgegw step that pulls it in, and the last
step shows what the uplink costs wherever it runs (in the main process, or in its own)."""

_IMPORT_CHILD = r"""
import importlib, json, sys
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
steps, config = json.loads(sys.argv[1]), sys.argv[2]
out = [["python", rss(), len(sys.modules), []]]
for label, names in steps:
    before = {name.split(".")[0] for name in sys.modules}
    for name in names:
        if name == "@config":
            import gateway.config as gc
            getattr(gc, "load_config_at_start", gc.load_config)(config)
            continue
        module, _, call = name.partition(":")
        try:
            imported = importlib.import_module(module)
        except ModuleNotFoundError:  # an older tree (gateway.logs before common.logs)
            if module != "common.logs":
                raise
            imported = importlib.import_module("gateway.logs")
        if call == "build_parser":
            try:
                imported.build_parser(["run"])  # this tree: `run` registers alone
            except TypeError:
                imported.build_parser()  # older trees: every command
        elif call:
            getattr(imported, call, lambda: importlib.import_module("structlog"))()  # older trees: plain
    new = sorted({name.split(".")[0] for name in sys.modules} - before - set(sys.builtin_module_names))
    out.append([label, rss(), len(sys.modules), new])
tops = {}
for name in sys.modules:
    top = name.split(".")[0]
    tops[top] = tops.get(top, 0) + 1
before = rss(), len(sys.modules)
import rich.pretty, rich.traceback  # what structlog imports when it is let
rich = [rss() - before[0], len(sys.modules) - before[1]]
print(json.dumps({"steps": out, "packages": tops, "rich": rich}))
"""


@dataclass
class Snapshot:
    """VmRSS and its split for one process at one moment (MiB)."""

    rss: float = 0.0
    hwm: float = 0.0
    anon: float = 0.0
    file: float = 0.0
    threads: int = 0
    parts: dict[str, float] = field(default_factory=dict)


def snapshot(pid: int) -> Snapshot:
    status = proctree.parse_status(Path(f"/proc/{pid}/status").read_text())

    def mib(key: str) -> float:
        return proctree.status_kib(status, key) / 1024

    parts: dict[str, float] = {}
    name = "?"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        first = line.split(maxsplit=5)
        if "-" in first[0] and not first[0].endswith(":"):
            path = first[5] if len(first) > 5 else ""
            if not path:
                name = "anonymous mappings (pymalloc arenas, thread arenas and stacks, mmap'd blocks)"
            elif path == "[heap]":
                name = "[heap] (brk: main arena of malloc)"
            elif path.startswith("["):
                name = path
            else:
                name = Path(path).name
        elif first[0] == "Rss:":
            parts[name] = parts.get(name, 0.0) + int(first[1]) / 1024
    threads = proctree.status_kib(status, "Threads")
    return Snapshot(mib("VmRSS"), mib("VmHWM"), mib("RssAnon"), mib("RssFile"), threads, dict(parts))


@dataclass
class Tree:
    """A checkout to measure: its root (on PYTHONPATH, the cwd of its imports) and interpreter."""

    label: str
    root: Path
    python: str


def processes(pid: int) -> list[tuple[int, str]]:
    """The child processes of ``pid`` (any of its threads may have started them): pid, command."""
    out: list[tuple[int, str]] = []
    for child in proctree.children(pid):
        with contextlib.suppress(OSError):
            argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            out.append((child, " ".join(a.decode(errors="replace") for a in argv if a)[:120]))
    return out


def import_breakdown(figures: Figures, tree: Tree, config: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(tree.root)}
    out = subprocess.run([tree.python, "-c", _IMPORT_CHILD, json.dumps(IMPORT_STEPS), str(config)], env=env,
                         capture_output=True, text=True, check=True, cwd=tree.root).stdout  # fmt: skip
    data = json.loads(out)
    figures.imports = [(s[0], float(s[1]), int(s[2]), list(s[3])) for s in data["steps"]]
    figures.packages = data["packages"]
    figures.rich = (float(data["rich"][0]), int(data["rich"][1]))


def metric(gw: Gateway, name: str) -> float | None:
    """The sum of a /metrics family's samples; None when /metrics did not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{gw.http_port}/metrics", timeout=10) as resp:
            text = resp.read().decode()
    except (OSError, urllib.error.URLError):
        return None
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and line[len(name)] in " {")  # fmt: skip


@dataclass
class Figures:
    imports: list[tuple[str, float, int, list[str]]] = field(default_factory=list)
    packages: dict[str, int] = field(default_factory=dict)
    idle: Snapshot = field(default_factory=Snapshot)
    idle_children: list[tuple[int, str, Snapshot]] = field(default_factory=list)
    """The main process's children at idle (the uplink when it has a process of its own)."""
    drained: Snapshot = field(default_factory=Snapshot)
    drained_children: list[tuple[int, str, Snapshot]] = field(default_factory=list)
    settled: Snapshot = field(default_factory=Snapshot)
    rich: tuple[float, int] = (0.0, 0)
    messages: int = 0
    drain_seconds: float = 0.0
    max_pending: float | None = None
    """The most items seen waiting in memory for the spool's writer (``edgegw_spool_pending``)."""


def children_snapshots(pid: int) -> list[tuple[int, str, Snapshot]]:
    out = []
    for child, command in processes(pid):
        with contextlib.suppress(OSError, KeyError):
            out.append((child, command, snapshot(child)))
    return out


def phase_idle(config: Path, work: Path, http_port: int, settle: float, figures: Figures, tree: Tree) -> None:
    gw = Gateway(config, work, http_port, root=tree.root, python=tree.python)
    try:
        gw.wait_ready()
        time.sleep(settle)
        figures.idle = snapshot(gw.pid)
        figures.idle_children = children_snapshots(gw.pid)
    finally:
        gw.stop()
    kids = ", ".join(f"child {pid} {snap.rss:.1f} MiB" for pid, _, snap in figures.idle_children)
    kids = kids or "no child process"
    print(f"  {tree.label}: idle after READY: VmRSS {figures.idle.rss:.1f} MiB main; {kids}", flush=True)


def phase_drain(config: Path, work: Path, http_port: int, broker: Mosquitto, layout: Layout, count: int,
                processes: int, settle: float, figures: Figures) -> None:  # fmt: skip
    with publishers(burst_jobs(broker.port, layout, count, processes, "zigbee2mqtt")) as results:
        figures.messages = sent = sum(r["sent"] for r in results)
    print(f"  preloaded {sent:,} readings; starting the gateway", flush=True)
    gw = Gateway(config, work, http_port)
    try:
        gw.wait_ready()
        deadline = time.monotonic() + max(120.0, sent / 1000)
        while time.monotonic() < deadline:
            pending = metric(gw, "edgegw_spool_pending")  # absent before this gauge existed
            if pending is not None and pending > (figures.max_pending or 0):
                figures.max_pending = pending
            shipped = metric(gw, "edgegw_forwarder_sent_total")
            depth = metric(gw, "edgegw_spool_depth")
            if shipped is not None and shipped >= sent and depth == 0:
                break
            time.sleep(0.25)
        else:
            print(f"  the drain did not finish in time (shipped {shipped}, spool depth {depth})")
        figures.drain_seconds = time.monotonic() - gw.ready_at
        figures.drained = snapshot(gw.pid)
        figures.drained_children = children_snapshots(gw.pid)
        print(f"  drained in {figures.drain_seconds:.1f} s: VmRSS {figures.drained.rss:.1f} MiB, "
              f"VmHWM {figures.drained.hwm:.1f} MiB", flush=True)  # fmt: skip
        time.sleep(settle)
        figures.settled = snapshot(gw.pid)
        print(f"  {settle:g} s later: VmRSS {figures.settled.rss:.1f} MiB", flush=True)
    finally:
        gw.stop()


def report(runs: list[tuple[Tree, Figures]], args: argparse.Namespace) -> str:
    fig = runs[0][1]

    def met(value: float) -> str:
        return "met" if value <= TARGET_MIB else "**not met**"

    lines = [
        f"# memory_bench {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        *machine_lines(),
        f"- commit {git_rev()}; `{' '.join(['python -m bench.memory_bench', *args.argv])}`; "
        f"load average {LOAD[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end",
        f"- gateway environment: {' '.join(args.env) if args.env else '(as is)'}",
        "",
    ]
    if args.imports_only:
        lines += ["| tree | imports of `edgegw run` and its config, VmRSS MiB |", "| --- | --- |"]
        lines += [f"| {tree.label} | {f.imports[-2][1]:.1f} (with the uplink's: {f.imports[-1][1]:.1f}) |"
                  for tree, f in runs]  # fmt: skip
    else:
        lines += [
            f"Idle after READY ({args.settle:g} s; {args.devices} devices, {args.rules} rules), VmRSS MiB; "
            f"the target is the main process at most {TARGET_MIB:g} MiB:",
            "",
            "| tree | main process | its child processes (the uplink) | main: target |",
            "| --- | --- | --- | --- |",
        ]
        for tree, f in runs:
            kids = "; ".join(
                f"{snap.rss:.1f} (pid {pid}: `{cmd[:60]}`)" for pid, cmd, snap in f.idle_children
            )
            kids = kids or "none: the uplink runs in the main process"
            lines.append(f"| {tree.label} | {f.idle.rss:.1f} | {kids} | {met(f.idle.rss)} |")
        drained_kids = sum(snap.rss for _, _, snap in fig.drained_children)
        lines += [
            "",
            f"{runs[0][0].label}, the drain:",
            "",
            "| figure | VmRSS MiB | target |",
            "| --- | --- | --- |",
            f"| idle after READY ({args.settle:g} s) | {fig.idle.rss:.1f} | {met(fig.idle.rss)} |",
            f"| after draining {fig.messages:,} readings ({fig.drain_seconds:.1f} s) | {fig.drained.rss:.1f} "
            f"| {met(fig.drained.rss)} |",
            f"| VmHWM over the drain | {fig.drained.hwm:.1f} | |",
            f"| child processes (the uplink) after the drain | "
            f"{drained_kids:.1f} ({len(fig.drained_children)} processes) | |",
            f"| {args.settle:g} s after the drain | {fig.settled.rss:.1f} | {met(fig.settled.rss)} |",
            "",
            "Most readings seen waiting in memory for the spool writer during the drain "
            "(`edgegw_spool_pending`, scraped every 0.25 s when /metrics answers): "
            + ("n/a" if fig.max_pending is None else f"{fig.max_pending:,.0f}"),
            "",
            "Split of VmRSS (`/proc/<pid>/smaps`), MiB:",
            "",
            "| mapping | idle | drained | settled |",
            "| --- | --- | --- | --- |",
            f"| anonymous (RssAnon) | {fig.idle.anon:.1f} | {fig.drained.anon:.1f} "
            f"| {fig.settled.anon:.1f} |",
            f"| files (RssFile) | {fig.idle.file:.1f} | {fig.drained.file:.1f} | {fig.settled.file:.1f} |",
            f"| threads | {fig.idle.threads} | {fig.drained.threads} | {fig.settled.threads} |",
        ]
        names = sorted(set(fig.idle.parts) | set(fig.drained.parts),
                       key=lambda n: -max(fig.drained.parts.get(n, 0), fig.idle.parts.get(n, 0)))  # fmt: skip
        for name in names[:12]:
            idle, drained, settled = (s.parts.get(name, 0.0) for s in (fig.idle, fig.drained, fig.settled))
            lines.append(f"| {name} | {idle:.1f} | {drained:.1f} | {settled:.1f} |")
    for tree, f in runs:
        lines += ["", f"{tree.label}: imports, in this order, in a fresh interpreter (`{tree.python}`):", "",
                  "| step | VmRSS MiB | + MiB | modules | new top-level packages |",
                  "| --- | --- | --- | --- | --- |"]  # fmt: skip
        prev = f.imports[0][1]
        for label, rss, modules, new in f.imports:
            shown = ", ".join(new[:12]) + (f" (+{len(new) - 12})" if len(new) > 12 else "")
            lines.append(f"| {label} | {rss:.1f} | {rss - prev:+.1f} | {modules} | {shown} |")
            prev = rss
    top = sorted(fig.packages.items(), key=lambda kv: -kv[1])[:15]
    lines += [
        "",
        "Modules per top-level package: " + ", ".join(f"{k} {v}" for k, v in top),
        "",
        f"For comparison, `import rich.pretty, rich.traceback` (what structlog imports when rich is "
        f"importable) adds {fig.rich[0]:+.1f} MiB and {fig.rich[1]} modules on top of these.",
        "",
    ]
    return "\n".join(lines)


def _rev(root: Path) -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False,
                         cwd=root).stdout  # fmt: skip
    return out.strip() or "no git"


LOAD = [float("nan")]


def _interrupted(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=60_000, help="readings in the drain (default 60k)")
    parser.add_argument("--processes", type=int, default=3, help="publisher processes for the preload")
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--rules", type=int, default=100)
    parser.add_argument("--settle", type=float, default=5.0, help="seconds idle before a figure")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="set in the gateway's environment (repeatable)")  # fmt: skip
    parser.add_argument("--imports-only", action="store_true", help="only the import breakdown")
    parser.add_argument("--write", action="store_true", help="also write bench/results/memory-<date>.md")
    parser.add_argument(
        "--gateway-root",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="also measure this checkout (repeatable), e.g. a worktree of the commit before",
    )
    parser.add_argument("--python", action="append", default=[], metavar="PATH",
                        help="the interpreter of --gateway-root (one for all or one each)")  # fmt: skip
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    LOAD[0] = os.getloadavg()[0]
    for item in args.env:
        name, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--env {item}: NAME=VALUE")
        os.environ[name] = value  # Gateway() passes the bench's environment on
    if len(args.python) > len(args.gateway_root) or (1 < len(args.python) != len(args.gateway_root)):
        parser.error("--python: one for all --gateway-root, or one for each")
    trees = [Tree(f"this tree ({git_rev()})", ROOT, sys.executable)]
    for i, root in enumerate(args.gateway_root):
        python = args.python[min(i, len(args.python) - 1)] if args.python else sys.executable
        trees.append(Tree(f"{root.name} ({_rev(root)})", root.resolve(), python))
    runs = [(tree, Figures()) for tree in trees]
    layout, gateway_devices = make_layout(args.devices, args.rules)
    with tempfile.TemporaryDirectory(prefix="edgegw-mem-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        offline = work / "offline.yaml"  # the same config, to load (nothing connects)
        kinds = ("readings", "events", "commands", "heartbeats", "checkpoints")
        write_config(offline, layout, gateway_devices, mqtt_port=1, bootstrap="127.0.0.1:9",
                     topics={k: f"t.{k}" for k in kinds}, http_port=1,
                     state=work / "offline-state")  # fmt: skip
        print("1. imports", flush=True)
        for tree, figures in runs:
            import_breakdown(figures, tree, offline)
        if not args.imports_only:
            signal.signal(signal.SIGTERM, _interrupted)
            print("starting Mosquitto and Kafka ...", flush=True)
            broker = Mosquitto(work / "mqtt")
            stack.callback(broker.stop)
            broker.start()
            node = KafkaNode(work / "kafka")
            stack.callback(node.stop)
            node.start()
            prefix = f"mem-{uuid.uuid4().hex[:6]}"
            topics = {kind: f"{prefix}.{kind}" for kind in kinds}
            for kind in ("readings", "events", "commands", "heartbeats"):
                node.create_topic(topics[kind], partitions=3 if kind == "readings" else 1)
            print("2. idle", flush=True)
            for i, (tree, figures) in enumerate(runs):
                http_port = free_port()
                config = work / f"edgegw-{i}.yaml"
                write_config(config, layout, gateway_devices, mqtt_port=broker.port, bootstrap=node.bootstrap,
                             topics=topics, http_port=http_port, state=work / f"state-{i}")  # fmt: skip
                phase_idle(config, work, http_port, args.settle, figures, tree)
            print(f"3. drain ({trees[0].label}): {args.messages:,} readings", flush=True)
            http_port = free_port()
            config = work / "edgegw-0.yaml"
            write_config(config, layout, gateway_devices, mqtt_port=broker.port, bootstrap=node.bootstrap,
                         topics=topics, http_port=http_port, state=work / "state-0")  # fmt: skip
            drain = runs[0][1]
            phase_drain(
                config, work, http_port, broker, layout, args.messages, args.processes, args.settle, drain
            )
    text = report(runs, args)
    print()
    print(text)
    if args.write:
        write_result("memory", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
