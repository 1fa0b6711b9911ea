"""Fleet view figures: projection rate into SQLite and PostgreSQL, rebuild time, lag under a
steady load, API latency with 1,000 devices.

    .venv/bin/python -m bench.fleet_bench                    # 1,000,000 events
    .venv/bin/python -m bench.fleet_bench --events 200000    # quicker

Starts a single-node Kafka (simulators.testbed.KafkaNode) and a durable PostgreSQL
(simulators.testbed.postgres, fsync on), pre-fills the gateways' topics with edgegw
CloudEvents (10 gateways x 100 devices; readings with a rule firing every 1,000, a
heartbeat every 10,000; produced by the gateway's own envelope), then:

1. projects the whole topic with one instance (FleetConsumer, as ``fleet serve`` does
   from an empty store) into SQLite, then into PostgreSQL: events/s;
2. ``edgegw fleet rebuild`` (the command, a process of its own) into a fresh SQLite: wall time;
3. ``edgegw fleet serve`` under a steady 5,000 events/s for 20 s: its lag (/metrics), sampled;
4. the JSON API of that view (1,000 devices): p50/p99 of each endpoint over 200 requests.

Prints the figures; nothing is asserted.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

from ruamel.yaml import YAML

from fleet.config import FleetConfig, from_values
from fleet.consumer import FleetConsumer
from fleet.projection import Projector
from fleet.schemas import Validators
from fleet.store import Store, open_store
from gateway.model import EventKind
from simulators.fleet_feed import FleetFeed, topics_for
from simulators.testbed import KafkaNode, free_port
from simulators.testbed.postgres import PostgresServer


def fill(node: KafkaNode, prefix: str, events: int) -> tuple[FleetFeed, float]:
    topics = topics_for(prefix)
    node.create_topic(topics.readings, partitions=3)
    node.create_topic(topics.events, partitions=2)
    node.create_topic(topics.commands)
    node.create_topic(topics.heartbeats)
    feed = FleetFeed(node.bootstrap, topics, gateways=10, devices=100)
    started = time.monotonic()
    now = time.time() - 3600
    sent = 0
    while sent < events:
        feed.readings(999, ts=now + sent / 1000, spread=0)
        feed.rule(feed.gateway_ids[sent % 10], f"rule{sent % 5}", EventKind.FIRED, ts=now + sent / 1000)
        sent += 1000
        if sent % 10_000 == 0:
            for gw in feed.gateway_ids:
                feed.heartbeat(gw)
    feed.flush(300)
    return feed, time.monotonic() - started


def config_for(node: KafkaNode, prefix: str, store: str, **extra: object) -> FleetConfig:
    topics = topics_for(prefix)
    return from_values(
        **{
            "kafka.bootstrap": node.bootstrap,
            "kafka.topics": topics.model_dump(),
            "kafka.group_id": f"bench-{uuid.uuid4().hex[:6]}",
            "store": store,
            "batch_size": 20000,
            **extra,
        }
    )


def project(config: FleetConfig) -> tuple[int, float]:
    store: Store = open_store(config.store)
    consumer = FleetConsumer(
        config, store, Projector(Validators.from_folder(), offline_after=config.offline_after)
    )
    started = time.monotonic()
    stats = consumer.rebuild()
    took = time.monotonic() - started
    store.close()
    return stats.events, took


def write_config(path: Path, config: FleetConfig) -> Path:
    data = config.model_dump(mode="json", exclude_defaults=False)
    with path.open("w") as f:
        YAML().dump(data, f)
    return path


def rebuild_cli(config_file: Path, store: str) -> float:
    started = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "gateway", "fleet", "rebuild", "--config", str(config_file), "--store", store],
        check=True,
        capture_output=True,
        timeout=1800,
    )
    return time.monotonic() - started


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as resp:
        body: bytes = resp.read()
        return body


def steady(
    node: KafkaNode, prefix: str, config_file: Path, base: str, rate: int, seconds: float
) -> list[float]:
    """Lag samples (sum over partitions) of a running ``fleet serve`` while ``rate`` events/s flow."""
    feed = FleetFeed(node.bootstrap, topics_for(prefix), gateways=10, devices=100, seed=2)
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "fleet", "serve", "--config", str(config_file)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                _get(base + "/metrics")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        time.sleep(3)  # let it catch up with the pre-filled topic (it starts from its stored offsets)
        samples: list[float] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                text = _get(base + "/metrics").decode()
                samples.append(
                    sum(
                        float(line.rsplit(" ", 1)[1])
                        for line in text.splitlines()
                        if line.startswith("edgegw_fleet_consumer_lag{")
                    )
                )
                time.sleep(0.25)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.monotonic()
        sent = 0
        while time.monotonic() - started < seconds:
            due = int((time.monotonic() - started) * rate)
            if due > sent:
                feed.readings(due - sent)
                feed.producer.poll(0)
                sent = due
            time.sleep(0.01)
        feed.flush()
        time.sleep(1)
        stop.set()
        sampler.join()
        return samples
    finally:
        proc.terminate()
        proc.wait(30)


def api_latency(base: str, requests: int = 200) -> dict[str, tuple[float, float]]:
    out: dict[str, tuple[float, float]] = {}
    for path in (
        "/api/gateways",
        "/api/gateways/gw3",
        "/api/devices",
        "/api/devices?gateway=gw5",
        "/api/alarms",
        "/api/rollups?sensor=gw1/sensor001/temperature",
    ):
        times = []
        for _ in range(requests):
            t = time.perf_counter()
            _get(base + path)
            times.append((time.perf_counter() - t) * 1000)
        times.sort()
        out[path] = (statistics.median(times), times[int(len(times) * 0.99) - 1])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rate", type=int, default=5000, help="steady load, events/s")
    parser.add_argument("--steady-seconds", type=float, default=20.0)
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="edgegw-fleet-bench-"))
    with KafkaNode(work / "kafka") as node:
        prefix = f"bench-{uuid.uuid4().hex[:6]}"
        feed, took = fill(node, prefix, args.events)
        print(
            f"pre-filled {feed.counts.events:,} events in {took:.1f} s ({feed.counts.events / took:,.0f}/s), "
            f"{len(feed.gateway_ids) * len(feed.devices)} devices"
        )
        n, took = project(config_for(node, prefix, f"sqlite://{work / 'view.db'}"))
        print(
            f"projected into SQLite:      {n:,} events in {took:.1f} s = {n / took:,.0f} events/s "
            "(one instance)"
        )
        if not args.skip_postgres:
            with PostgresServer(durable=True) as pg:
                n, took = project(config_for(node, prefix, pg.create_database("bench")))
                print(
                    f"projected into PostgreSQL:  {n:,} events in {took:.1f} s = {n / took:,.0f} events/s "
                    "(one instance, fsync on)"
                )
        listen = f"127.0.0.1:{free_port()}"
        config = config_for(node, prefix, f"sqlite://{work / 'serve.db'}", listen=listen, batch_size=5000)
        config_file = write_config(work / "fleet.yaml", config)
        took = rebuild_cli(config_file, f"sqlite://{work / 'serve.db'}")
        print(
            f"edgegw fleet rebuild:       {feed.counts.events:,} events in {took:.1f} s "
            "(the command, start to exit)"
        )
        samples = steady(node, prefix, config_file, f"http://{listen}", args.rate, args.steady_seconds)
        samples.sort()
        print(
            f"lag under {args.rate:,} events/s for {args.steady_seconds:.0f} s: "
            f"median {statistics.median(samples):,.0f}, "
            f"p99 {samples[int(len(samples) * 0.99) - 1]:,.0f}, max {samples[-1]:,.0f} events "
            f"({len(samples)} samples of /metrics)"
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "fleet", "serve", "--config", str(config_file)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            time.sleep(3)
            for path, (p50, p99) in api_latency(f"http://{listen}").items():
                print(f"API {path:45s} p50 {p50:6.1f} ms  p99 {p99:6.1f} ms (1,000 devices)")
        finally:
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    main()
