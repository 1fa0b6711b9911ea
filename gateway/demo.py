"""``edgegw demo``: a simulated home run by the real gateway, in a live terminal view.

Everything is real but the house: an MQTT broker (Mosquitto when installed, else the
embedded amqtt broker), the simulated fleet of ``examples/demo/fleet.yaml`` publishing
in four payload profiles, the rules of ``examples/demo/rules.yaml``, lights, fans and a
thermostat that obey and confirm commands (:mod:`simulators.echo`), the on-disk spool,
and the Kafka uplink when one is given (``--kafka``) or started (``--local-kafka``).
The gateway is :class:`gateway.runtime.Runtime`, exactly as ``edgegw run`` runs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text
from ruamel.yaml import YAML

from common.logs import configure_logging
from gateway.config import load_config
from gateway.runtime import Runtime
from simulators.echo import EchoActuators
from simulators.fleet import FleetSpec
from simulators.generator import FleetStats
from simulators.mqtt_publisher import BrokerTarget, publish_fleet
from simulators.testbed import KafkaNode, Mosquitto, find_mosquitto, java_problem
from simulators.testbed.embedded import EmbeddedBroker

__all__ = ["DemoOptions", "run_demo"]

GATEWAY_ID = "demo-home"
ACTUATORS: list[dict[str, Any]] = [
    {"id": "living-room/thermostat", "profile": "zigbee2mqtt", "name": "living-room-thermostat",
     "confirm": {"timeout": "3s"}},
    {"id": "bedroom/fan", "profile": "zigbee2mqtt", "name": "bedroom-fan", "confirm": {"timeout": "3s"}},
    {"id": "hall/light", "profile": "zigbee2mqtt", "name": "hall-light", "confirm": {"timeout": "3s"}},
    {"id": "office/ventilation", "profile": "tasmota", "name": "office-vent", "confirm": {"timeout": "3s"}},
]  # fmt: skip


@dataclass(slots=True)
class DemoOptions:
    duration: float | None = None
    kafka: str | None = None
    local_kafka: bool = False
    rate: float | None = None
    workdir: Path | None = None
    view: bool | None = None  # None: live view on a terminal, status lines otherwise
    examples: Path | None = None


@dataclass(slots=True)
class _Demo:
    options: DemoOptions
    console: Console
    workdir: Path
    broker_label: str = ""
    uplink_label: str = "none"
    runtime: Runtime | None = None
    fleet_stats: FleetStats = field(default_factory=FleetStats)
    echo: EchoActuators | None = None
    started: float = field(default_factory=time.monotonic)
    _rate_mark: tuple[float, int] = (0.0, 0)


def _examples_dir(options: DemoOptions) -> Path:
    if options.examples is not None:
        return options.examples
    here = Path(__file__).resolve().parents[1] / "examples" / "demo"
    if here.is_dir():
        return here
    return Path(str(resources.files("gateway"))).parent / "examples" / "demo"


def run_demo(options: DemoOptions) -> int:
    """Set up the house, run the gateway until Ctrl-C or ``duration``, print a summary."""
    console = Console(stderr=False, soft_wrap=True)  # piped or logged: one line per status line
    workdir = options.workdir or Path(tempfile.mkdtemp(prefix="edgegw-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    demo = _Demo(options, console, workdir)
    with contextlib.ExitStack() as stack:
        host, port = stack.enter_context(_broker(demo))
        bootstrap = stack.enter_context(_kafka(demo))
        config_path = _write_config(demo, host, port, bootstrap)
        log_file = stack.enter_context((workdir / "edgegw.log").open("a"))
        configure_logging(level="info", json=False, file=log_file)
        console.print(f"[dim]config {config_path}; logs {log_file.name}; state {workdir / 'state'}[/]")
        demo.echo = stack.enter_context(EchoActuators(host, port))
        loaded = load_config(config_path)
        demo.runtime = Runtime(loaded, gateway_id=GATEWAY_ID)
        stop_fleet = threading.Event()
        spec = FleetSpec.load(_examples_dir(options) / "fleet.yaml")
        fleet = threading.Thread(
            target=_run_fleet, args=(demo, spec, BrokerTarget(host, port), stop_fleet), daemon=True
        )
        try:
            asyncio.run(_main(demo, fleet, stop_fleet))
        except KeyboardInterrupt:
            pass
        finally:
            stop_fleet.set()
            fleet.join(10)
    _summary(demo)
    return 0


@contextlib.contextmanager
def _broker(demo: _Demo) -> Iterator[tuple[str, int]]:
    if find_mosquitto() is not None:
        with Mosquitto(demo.workdir / "mosquitto") as broker:
            demo.broker_label = f"mosquitto {broker.host}:{broker.port}"
            demo.console.print(
                f"[green]MQTT[/]  {demo.broker_label} (Debian's mosquitto, config written here)"
            )
            yield broker.host, broker.port
        return
    with EmbeddedBroker() as embedded:
        demo.broker_label = f"embedded amqtt {embedded.host}:{embedded.port}"
        demo.console.print(f"[yellow]MQTT[/]  {demo.broker_label} (Mosquitto not installed)")
        yield embedded.host, embedded.port


@contextlib.contextmanager
def _kafka(demo: _Demo) -> Iterator[str | None]:
    options = demo.options
    if options.kafka:
        demo.uplink_label = f"kafka {options.kafka}"
        demo.console.print(f"[green]Kafka[/] {options.kafka}")
        yield options.kafka
        return
    if not options.local_kafka:
        demo.console.print("[yellow]Kafka[/] none: readings stay in the spool (give --kafka HOST:PORT)")
        yield None
        return
    problem = java_problem()
    if problem is not None:
        demo.console.print(f"[yellow]Kafka[/] not started: {problem}; readings stay in the spool")
        yield None
        return
    demo.console.print("[dim]starting Apache Kafka (KRaft, single node) ...[/]")
    with KafkaNode(demo.workdir / "kafka") as node:
        demo.uplink_label = f"kafka {node.bootstrap} (local test bed)"
        demo.console.print(f"[green]Kafka[/] {node.bootstrap} (local, data in {node.data_dir})")
        yield node.bootstrap


def _write_config(demo: _Demo, host: str, port: int, bootstrap: str | None) -> Path:
    examples = _examples_dir(demo.options)
    spec = FleetSpec.load(examples / "fleet.yaml")
    config: dict[str, Any] = {
        "gateway": {"id": GATEWAY_ID, "state_dir": str(demo.workdir / "state")},
        "mqtt": {"host": host, "port": port},
        "devices": spec.gateway_devices(),
        "actuators": ACTUATORS,
        "include": [str(examples / "rules.yaml")],
        "http": {"port": 0},
    }
    if bootstrap is not None:
        config["bridge"] = {"kafka": {"bootstrap": bootstrap, "heartbeat_interval": "10s"}}
    path = demo.workdir / "edgegw.yaml"
    yaml = YAML()
    yaml.default_flow_style = False
    with path.open("w") as handle:
        handle.write("# written by `edgegw demo`; `edgegw run --config` takes it as it is\n")
        yaml.dump(config, handle)
    return path


def _run_fleet(demo: _Demo, spec: FleetSpec, target: BrokerTarget, stop: threading.Event) -> None:
    runtime = demo.runtime
    assert runtime is not None
    while not runtime.ready and not stop.is_set():
        time.sleep(0.05)
    try:
        demo.fleet_stats = publish_fleet(
            spec,
            target,
            rate=demo.options.rate,
            stop=stop,
            progress=lambda s: setattr(demo, "fleet_stats", s),
        )
    except (ConnectionError, OSError) as exc:
        demo.console.print(f"[red]fleet stopped: {exc}[/]")


async def _main(demo: _Demo, fleet: threading.Thread, stop_fleet: threading.Event) -> None:
    runtime = demo.runtime
    assert runtime is not None
    task = asyncio.create_task(runtime.run())
    fleet.start()
    deadline = None if demo.options.duration is None else time.monotonic() + demo.options.duration
    view = demo.options.view if demo.options.view is not None else demo.console.is_terminal
    try:
        if view:
            with Live(_render(demo), console=demo.console, refresh_per_second=4, screen=False) as live:
                while not task.done() and (deadline is None or time.monotonic() < deadline):
                    await asyncio.sleep(0.25)
                    live.update(_render(demo))
        else:
            last = 0.0
            shown_url = False
            while not task.done() and (deadline is None or time.monotonic() < deadline):
                await asyncio.sleep(0.25)
                if not shown_url and runtime.ready and runtime.http_port:
                    shown_url = True
                    demo.console.print(f"[green]status page[/] http://127.0.0.1:{runtime.http_port}/")
                if time.monotonic() - last >= 5:
                    last = time.monotonic()
                    demo.console.print(_status_line(demo))
    finally:
        stop_fleet.set()
        await asyncio.to_thread(fleet.join, 10)
        await _drain(demo)
        runtime.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _drain(demo: _Demo) -> None:
    """Give the gateway up to 3 s to take what the fleet already published."""
    runtime = demo.runtime
    assert runtime is not None
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(3.0):
            # polling: the counters are plain ints the hot path bumps, with no event to wait on
            while sum(runtime.state.readings.values()) < demo.fleet_stats.readings:  # noqa: ASYNC110
                await asyncio.sleep(0.05)


# ---------------------------------------------------------------------- the view
def _rate(demo: _Demo, total: int) -> float:
    now = time.monotonic()
    then, count = demo._rate_mark
    demo._rate_mark = (now, total)
    return 0.0 if then == 0 else (total - count) / max(now - then, 1e-6)


def _uplink(runtime: Runtime) -> tuple[str, int, int]:
    if runtime.forwarder is None:
        return "disabled", 0, 0
    stats = runtime.forwarder.stats()
    return stats.state, stats.shipped, stats.backlog_rows


def _status_line(demo: _Demo) -> str:
    rt = demo.runtime
    assert rt is not None
    readings = sum(rt.state.readings.values())
    state, shipped, backlog = _uplink(rt)
    depth = rt.spool.stats().depth if rt.spool is not None else 0
    return (
        f"[{time.monotonic() - demo.started:5.0f}s] readings {readings}  "
        f"fires {sum(rt.state.fires.values())}  "
        f"commands {sum(rt.state.commands.values())}  spool {depth}  uplink {state} shipped {shipped} "
        f"backlog {backlog}"
    )


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def _render(demo: _Demo) -> Group:
    rt = demo.runtime
    assert rt is not None
    st = rt.state
    mono = time.monotonic()
    readings = sum(st.readings.values())
    header = Text.assemble(
        ("edgegw demo ", "bold"),
        (f"gateway {rt.gateway_id}  ", "cyan"),
        f"MQTT {demo.broker_label}  uplink {demo.uplink_label}  ",
        f"status page http://127.0.0.1:{rt.http_port}/  " if rt.http_port else "",
        (f"up {mono - demo.started:.0f}s", "dim"),
    )
    devices = Table(title="devices", expand=True, show_edge=False)
    for column in ("device", "values", "seen", "state"):
        devices.add_column(column, no_wrap=True)
    by_device: dict[str, list[str]] = {}
    for sensor, (value, _ts) in sorted(st.last_values.items()):
        device, _, metric = sensor.partition("/")
        by_device.setdefault(device, []).append(f"{metric}={_fmt(value)}")
    for dev in rt.config.devices:
        health = rt.health.get(dev.id)
        seen = "-" if health.last_seen is None else f"{mono - health.last_seen:.0f}s ago"
        state = str(rt.health.state(dev.id, mono))
        colour = {"online": "green", "offline": "red"}.get(state, "dim")
        devices.add_row(dev.id, " ".join(by_device.get(dev.id, [])), seen, Text(state, style=colour))
    rules = Table(title="rules", expand=True, show_edge=False)
    for column in ("rule", "state", "fired"):
        rules.add_column(column, no_wrap=True)
    for rule in rt.engine.rules:
        rules.add_row(rule.id, Text("fired", "bold yellow") if rule.fired else Text("clear", "dim"),
                      str(st.fires.get(rule.id, 0)))  # fmt: skip
    actuators = Table(title="actuators", expand=True, show_edge=False)
    for column in ("actuator", "last command", "sent", "confirmed"):
        actuators.add_column(column, no_wrap=True)
    for cfg in rt.config.actuators:
        last = " ".join(f"{k}={v}" for k, v in st.actuator_state.get(cfg.id, {}).items())
        actuators.add_row(cfg.id, last, str(rt.actuators.sent.get(cfg.id, 0)),
                          str(rt.actuators.confirmed.get(cfg.id, 0)))  # fmt: skip
    state, shipped, backlog = _uplink(rt)
    spool = rt.spool.stats() if rt.spool is not None else None
    footer = Text.assemble(
        (f"{_rate(demo, readings):6.0f} readings/s  ", "bold"),
        f"readings {readings}  bad input {sum(rt.counter.counts.values())}  ",
        f"spool depth {spool.depth if spool else 0} ({(spool.bytes if spool else 0) / 1024:.0f} KiB)  ",
        (f"uplink {state}", "green" if state == "up" else "yellow"),
        f"  shipped {shipped}  backlog {backlog}",
    )
    events = Text("\n".join(st.recent) or "(no rule events yet)", style="dim")
    return Group(
        header,
        devices,
        Table.grid(expand=True),
        rules,
        actuators,
        Panel(events, title="recent rule events", expand=True),
        footer,
        Text("Ctrl-C stops the demo", style="dim"),
    )


def _summary(demo: _Demo) -> None:
    rt = demo.runtime
    console = demo.console
    if rt is None:
        return
    st = rt.state
    state, shipped, backlog = _uplink(rt)
    table = Table(title="edgegw demo summary", show_header=False)
    table.add_column("what")
    table.add_column("count", justify="right")
    rows = [
        ("simulated readings sent", demo.fleet_stats.readings),
        ("readings received", sum(st.readings.values())),
        ("bad input counted", sum(rt.counter.counts.values())),
        ("rule fires", sum(st.fires.values())),
        ("rule events", sum(st.events.values())),
        ("commands sent", sum(st.commands.values())),
        ("commands confirmed", sum(rt.actuators.confirmed.values())),
        ("kafka events shipped", shipped),
        ("spool backlog", backlog if rt.forwarder is not None else "n/a (no uplink)"),
    ]
    for what, count in rows:
        table.add_row(what, str(count))
    console.print(table)
    console.print(f"uplink: {state}; files in {demo.workdir}")
