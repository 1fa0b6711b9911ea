"""``edgegw demo --fleet``: three simulated gateways shipping to Kafka, and the fleet view.

The house of ``edgegw demo`` three times over: three ``edgegw run`` processes (gateways
``home-1``..``home-3``, each with the demo's devices, rules and actuators, heartbeats
every 5 s) read the simulated fleet from one MQTT broker and ship to one Kafka (given
with ``--kafka`` or started locally); ``edgegw fleet``'s consumer and web page run in
this process over a SQLite view in the work folder. The page's address is printed at
start. Stop a gateway (its pid is printed) to watch it go offline after 15 s.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from rich.console import Console

from gateway.demo import DemoOptions, _broker, _Demo, _examples_dir, _kafka, _write_config
from gateway.errors import GatewayError
from simulators.echo import EchoActuators
from simulators.fleet import FleetSpec
from simulators.mqtt_publisher import BrokerTarget, publish_fleet

__all__ = ["run_fleet_demo"]

GATEWAYS = ("home-1", "home-2", "home-3")
HEARTBEAT = "5s"


def _gateway_config(demo: _Demo, host: str, port: int, bootstrap: str, gateway_id: str) -> Path:
    folder = demo.workdir / gateway_id
    folder.mkdir(exist_ok=True)
    text = _write_config(_Demo(demo.options, demo.console, folder), host, port, bootstrap).read_text()
    text = text.replace("id: demo-home", f"id: {gateway_id}").replace(
        "heartbeat_interval: 10s", f"heartbeat_interval: {HEARTBEAT}"
    )
    path = folder / "edgegw.yaml"
    path.write_text(text)
    return path


def run_fleet_demo(options: DemoOptions, *, listen: str = "127.0.0.1:0") -> int:
    try:
        from fleet.config import from_values  # noqa: PLC0415 - the fleet extra
        from fleet.consumer import FleetConsumer  # noqa: PLC0415
        from fleet.projection import Projector  # noqa: PLC0415
        from fleet.schemas import Validators  # noqa: PLC0415
        from fleet.sqlite import SqliteStore  # noqa: PLC0415
        from fleet.web import FleetWeb  # noqa: PLC0415
    except ImportError as exc:
        raise GatewayError(
            f"the fleet demo needs the fleet extra: pip install 'edgegw[fleet]' ({exc})"
        ) from exc
    if not (options.kafka or options.local_kafka):
        raise GatewayError("the fleet demo needs Kafka: give --kafka HOST:PORT or --local-kafka (Java 17)")
    console = Console()
    workdir = options.workdir or Path(tempfile.mkdtemp(prefix="edgegw-fleet-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    demo = _Demo(options, console, workdir)
    stop = threading.Event()
    with contextlib.ExitStack() as stack:
        host, port = stack.enter_context(_broker(demo))
        bootstrap = stack.enter_context(_kafka(demo))
        if bootstrap is None:
            raise GatewayError("the fleet demo needs Kafka, and none could be started")
        config = from_values(
            **{
                "kafka.bootstrap": bootstrap,
                "store": f"sqlite://{workdir / 'fleet.db'}",
                "heartbeat_interval": HEARTBEAT,
                "tick_interval": "0.5s",
            }
        )
        store = SqliteStore(workdir / "fleet.db")
        consumer = FleetConsumer(
            config, store, Projector(Validators.from_folder(), offline_after=config.offline_after)
        )
        view_host, _, view_port = listen.rpartition(":")
        web = FleetWeb(view_host or "127.0.0.1", int(view_port), store.reader, consumer.stats).start()
        stack.callback(web.stop)
        console.print(f"[bold green]fleet view[/] {web.url}  (open it in a browser)")
        stack.enter_context(EchoActuators(host, port))
        _start_gateways(stack, demo, host, port, bootstrap)
        view = threading.Thread(target=consumer.serve, args=(stop,), name="fleet-consumer", daemon=True)
        view.start()
        stack.callback(view.join, 10)
        stack.callback(stop.set)
        spec = FleetSpec.load(_examples_dir(options) / "fleet.yaml")
        fleet = threading.Thread(
            target=publish_fleet,
            args=(spec, BrokerTarget(host, port)),
            kwargs={"rate": options.rate, "stop": stop},
            daemon=True,
        )
        time.sleep(2.0)  # the gateways subscribe before the fleet starts
        fleet.start()
        deadline = None if options.duration is None else time.monotonic() + options.duration
        try:
            while deadline is None or time.monotonic() < deadline:
                time.sleep(5)
                s = consumer.stats
                console.print(
                    f"[dim]fleet view: {s.events:,} events projected, {s.transitions} "
                    f"online/offline changes, lag {sum(s.lag().values())} — {web.url}[/]"
                )
        except KeyboardInterrupt:
            pass
    return 0


def _start_gateways(stack: contextlib.ExitStack, demo: _Demo, host: str, port: int, bootstrap: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    procs: list[subprocess.Popen[bytes]] = []
    for gw in GATEWAYS:
        path = _gateway_config(demo, host, port, bootstrap, gw)
        log = stack.enter_context((path.parent / "edgegw.log").open("ab"))
        cmd = [sys.executable, "-m", "gateway", "run", "--config", str(path)]
        procs.append(subprocess.Popen(cmd, stdout=log, stderr=log, env=env))
        demo.console.print(f"[green]gateway[/] {gw} pid {procs[-1].pid} (config {path}, log {log.name})")
    stack.callback(_stop_all, procs)


def _stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(15)
