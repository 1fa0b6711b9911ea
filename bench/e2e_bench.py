"""End-to-end figures of ``edgegw run``: READY time, throughput to Kafka, latency, memory, CPU.

    .venv/bin/python -m bench.e2e_bench [--quick]      # or: ./scripts/bench e2e_bench
    .venv/bin/python -m bench.e2e_bench --quick --no-outage --no-backlog   # the first four only

Starts a test-bed Mosquitto and a single-node Kafka, writes a gateway config (1000
Zigbee2MQTT temperature sensors from a generated fleet spec, 100 threshold rules on the
first 100 of them, each commanding its own Zigbee2MQTT actuator, the spool, the Kafka
uplink in exactly-once mode, HTTP on a free port) and runs ``python -m gateway run`` as a
subprocess with JSON logs. Mosquitto runs with ``set_tcp_nodelay true`` (the configuration
the docs recommend for low latency; the bare references use the same broker), or with
Debian's default (Nagle on) under ``--broker-default``; ``--broker-nodelay`` is accepted
and changes nothing. The readings topics are stamped by the broker (``LogAppendTime``),
so the time each record arrived in Kafka is known. Then:

1. **READY**: three starts; the ``ready`` log line's ``seconds`` and the wall time from
   spawn to that line (medians). The third start is stopped too: the broker keeps the
   gateway's persistent session.
2. **Throughput** (preloaded queues, as in ``bench.mqtt_ingest``): a bare paho
   subscriber registers a persistent QoS 1 session on the same topics; with both away,
   several publisher processes send N QoS 1 readings as fast as they can (one reading
   per message; sensors 1-98 cross their threshold on every 10th of their readings, so
   about 1 % of the readings fire or clear a rule). The bare subscriber then drains its
   copy and only counts; then the gateway starts and drains its copy through rules,
   spool and Kafka. Measured: ``edgegw_readings_total`` (``/metrics``) until all N are
   in, a read_committed Kafka consumer until it has seen all N (unique ``ce_id``
   headers and unique device/value pairs: lost and duplicated counts), the commands on
   the actuator topics against the number expected, and the ratio to the bare subscriber.
   The rate to Kafka is given twice: all N over the time from READY (producer start-up
   included) and between the first and the last record's arrival in Kafka.
3. **Latency** at 1k and 5k readings/s, paced, from one publisher process: every 10th
   message is sensor 99 (1k) or 100 (5k), alternating across its threshold, carrying
   its send time (``time.time_ns``); a subscriber on the actuator's command topic
   records arrivals; the n-th command is matched with the n-th crossing.
4. **Memory** (VmRSS, VmHWM of the gateway after the throughput phase) and **CPU**
   seconds per 1,000 readings (``/proc/<pid>/stat`` utime + stime, from READY to the
   last reading seen in Kafka; and over the latency phases).
5. **Latency while the uplink drains a backlog** (``--backlog-events``, 1M; quick 100k;
   skip with ``--no-backlog``), for 1k and 5k/s each: a fresh spool (state dir and topics
   of its own) is pre-filled with that many readings through ``Spool.append_many`` and the
   SpoolConfig and lanes the gateway will use; a gateway starts on it with Kafka up, and
   the paced latency run of 3. starts at READY while /metrics is scraped until it shows
   rows shipped. Counted: the crossings sent between the first and the last backlog
   record's arrival in Kafka (the whole window is given too when the drain ended inside
   it). Afterwards a read_committed consumer reads the topic: how long the drain took from
   READY, its rate, and lost/duplicated backlog and live readings. Then the same again
   with the bare reference's echo client (as in 3.) measuring instead of the gateway, whose
   uplink drains a backlog of its own meanwhile: what the drain's load (the uplink process,
   Kafka and Mosquitto sharing the cores) costs a client that does nothing else.
6. **Kafka outage under load** (``--outage-seconds``, 600; quick 60; skip with
   ``--no-outage``): a fresh gateway with Kafka up, then Kafka stopped, 1k readings/s for
   the outage (with crossings: local automation keeps working) while VmRSS is sampled
   every 5 s (median, max, at the end); Kafka started again: the time from its first
   metadata answer to the last outage reading in Kafka, once the spool is empty, and
   lost/duplicated readings.

Prints a markdown table and writes it to
``bench/results/e2e-<date>[-quick][-profile][-broker-default].md`` with the machine and
versions. Nothing is asserted; a missed target reads "not met".
Every process started here is stopped on exit, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import queue
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import confluent_kafka
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from bench import proctree
from bench.brokers import start_brokers
from bench.e2e_backlog import (
    BacklogRun,
    Latency,
    OutageRun,
    RssSampler,
    audit_topic,
    backlog_rows,
    met,
    outage_rows,
    prefill_spool,
    summarise,
)
from bench.machine import ROOT, git_rev, machine_lines, write_result
from bench.mqtt_ingest import bare_drain, bare_register
from simulators.fleet import FleetSpec
from simulators.testbed import KafkaNode, Mosquitto, free_port

CROSS_EVERY = 10  # a crossing sensor crosses its threshold on every 10th of its readings
LAT_EVERY = 10  # in the latency phases every 10th message is the latency sensor
THRESHOLD = 30.0
LOAD_AT_START = [float("nan")]
POLL_S = 0.25  # /metrics scrapes cost the gateway CPU: not too often
TARGETS = {"ratio": 0.8, "eos_ratio": 0.9, "p99_1k": 2.0, "p99_5k": 5.0, "rss": 50.0, "ready": 1.5}
"""``eos_ratio``: exactly-once from a 300k backlog, issue 16 (``ratio``, ingest: issue 7)."""


# ---------------------------------------------------------------------- config
@dataclass(frozen=True)
class Layout:
    devices: list[str]
    rules: int

    @property
    def rule_devices(self) -> list[str]:
        return self.devices[: self.rules]

    @property
    def crossing(self) -> list[str]:
        """Rule sensors that cross in the throughput phase (the last two serve the latency phases)."""
        return self.rule_devices[:-2]

    @property
    def latency(self) -> tuple[str, str]:
        return self.rule_devices[-2], self.rule_devices[-1]

    @property
    def background(self) -> list[str]:
        return self.devices[self.rules :]

    @staticmethod
    def actuator(device: str) -> str:
        return "act-" + device.split("-", 1)[1]


def make_layout(devices: int, rules: int) -> tuple[Layout, list[dict[str, Any]]]:
    spec = FleetSpec.model_validate(
        {
            "seed": 1,
            "groups": [{"kind": "temperature", "count": devices, "profile": "zigbee2mqtt", "prefix": "t"}],
        }
    )
    gateway_devices = spec.gateway_devices()
    return Layout([d["id"] for d in gateway_devices], rules), gateway_devices


def write_config(
    path: Path,
    layout: Layout,
    devices: list[dict[str, Any]],
    *,
    mqtt_port: int,
    bootstrap: str,
    topics: dict[str, str],
    http_port: int,
    state: Path,
) -> None:
    rules = [
        {
            "id": f"r-{dev}",
            "when": {"sensor": f"{dev}/temperature", "above": THRESHOLD},
            "then": [{"set": Layout.actuator(dev), "to": {"state": "ON"}}],
            "else": [{"set": Layout.actuator(dev), "to": {"state": "OFF"}}],
            "max_fires_per_minute": 1_000_000,
        }
        for dev in layout.rule_devices
    ]
    config = {
        "gateway": {"id": "bench-gw", "state_dir": str(state)},
        "mqtt": {"host": "127.0.0.1", "port": mqtt_port, "client_id": "edgegw-bench"},
        "devices": devices,
        "actuators": [
            {"id": Layout.actuator(d), "profile": "zigbee2mqtt", "name": Layout.actuator(d)}
            for d in layout.rule_devices
        ],
        "rules": rules,
        "bridge": {
            "spool": {"path": str(state / "spool.db")},
            "kafka": {"bootstrap": bootstrap, "mode": "exactly_once", "topics": topics},
        },
        "http": {"host": "127.0.0.1", "port": http_port},
        "log": {"level": "info", "format": "json"},
    }
    path.write_text(json.dumps(config, indent=1) + "\n")


def edit_config(
    path: Path,
    *,
    client_id: str | None = None,
    log_level: str | None = None,
    otherwise: bool = True,
    actuator_qos: int | None = None,
    kafka: bool | dict[str, Any] = True,
    spool: dict[str, Any] | None = None,
    mqtt: dict[str, Any] | None = None,
) -> None:
    """Change a config :func:`write_config` wrote: the MQTT client id, the log level, the
    rules' ``else`` actions (``otherwise=False``: none, one command per hot reading), the
    actuators' QoS, the Kafka section (``False``: none, spool only; a dict: settings added),
    spool settings and MQTT connection settings added."""
    config = json.loads(path.read_text())
    if client_id:
        config["mqtt"]["client_id"] = client_id
    if log_level:
        config["log"]["level"] = log_level
    if not otherwise:
        for rule in config["rules"]:
            rule.pop("else", None)
    if actuator_qos is not None:
        for actuator in config["actuators"]:
            actuator["qos"] = actuator_qos
    if kafka is False:
        config["bridge"].pop("kafka", None)
    elif isinstance(kafka, dict):
        config["bridge"]["kafka"].update(kafka)
    config["bridge"]["spool"].update(spool or {})
    config["mqtt"].update(mqtt or {})
    path.write_text(json.dumps(config, indent=1) + "\n")


# ---------------------------------------------------------------------- the gateway process
def gateway_argv(python: str, config: Path) -> list[str]:
    """``edgegw run`` of ``config`` with JSON logs."""
    return [python, "-m", "gateway", "run", "--config", str(config), "--log-format", "json"]


def gateway_env(root: Path) -> dict[str, str]:
    """This environment with ``root`` (a checkout) as the import root, without systemd's socket."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    env.pop("NOTIFY_SOCKET", None)
    return env


class Gateway:
    """``python -m gateway run`` with JSON logs; a reader thread notes when ``ready`` appears."""

    def __init__(
        self, config: Path, cwd: Path, http_port: int, *, root: Path | None = None, python: str | None = None
    ) -> None:
        """``root``: the checkout run (on ``PYTHONPATH``; default this one) with ``python``
        (default this interpreter)."""
        self.http_port = http_port
        self.spawned = time.monotonic()
        self.proc = subprocess.Popen(
            gateway_argv(python or sys.executable, config),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=cwd,
            env=gateway_env(root or ROOT),
        )
        self.ready = threading.Event()
        self.ready_seconds = 0.0
        self.ready_at = 0.0
        self.tail: list[str] = []
        self.scrape_failures = 0
        self.slowest_scrape = 0.0
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if not self.ready.is_set() and '"ready"' in line:
                with contextlib.suppress(ValueError):
                    entry = json.loads(line)
                    if entry.get("event") == "ready":
                        self.ready_at = time.monotonic()
                        self.ready_seconds = float(entry["seconds"])
                        self.ready.set()
            if '"command sent"' not in line:
                self.tail = [*self.tail[-30:], line.rstrip()]

    def wait_ready(self, timeout: float = 60.0) -> None:
        if not self.ready.wait(timeout):
            raise RuntimeError("the gateway did not get READY:\n" + "\n".join(self.tail))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=5)

    def scrape(self) -> dict[str, float] | None:
        """``/metrics`` as {series (name and labels): value}; None when it did not answer within 10 s."""
        began = time.monotonic()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/metrics", timeout=10) as resp:
                text = resp.read().decode()
        except (OSError, urllib.error.URLError):
            self.scrape_failures += 1
            return None
        finally:
            self.slowest_scrape = max(self.slowest_scrape, time.monotonic() - began)
        series: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                with contextlib.suppress(ValueError):
                    series[name] = float(value)
        return series

    def readings(self) -> float | None:
        """``edgegw_readings_total`` summed; None when /metrics did not answer within 10 s."""
        series = self.scrape()
        return None if series is None else metric(series, "edgegw_readings_total")

    def cpu_seconds(self) -> float:
        """utime + stime of the gateway's main process (not its children)."""
        return proctree.cpu_seconds(self.pid, tree=False)

    def thread_cpu(self) -> dict[str, float]:
        """CPU seconds per thread name of the main process (the gateway names its threads in
        the kernel: the event loop is ``python``, then ``edgegw-spool``, ``edgegw-uplink``,
        librdkafka's ``rdk:*``; :func:`bench.proctree.thread_label`); threads of one name are
        summed, threads that ended are not counted."""
        return proctree.thread_cpu(self.pid, tree=False)

    def memory_mb(self) -> tuple[float, float]:
        """(VmRSS, VmHWM) in MiB."""
        status = proctree.parse_status(Path(f"/proc/{self.pid}/status").read_text())
        return proctree.status_kib(status, "VmRSS") / 1024, proctree.status_kib(status, "VmHWM") / 1024


def metric(series: dict[str, float], name: str) -> float:
    """The sum of every series of ``name`` (all label values)."""
    return sum(v for k, v in series.items() if k == name or k.startswith(name + "{"))


def uplink_state(series: dict[str, float]) -> str:
    prefix = 'edgegw_uplink_state{state="'
    return next((k[len(prefix) : -2] for k, v in series.items() if k.startswith(prefix) and v == 1.0), "?")


# ---------------------------------------------------------------------- publishers (child processes)
@dataclass(frozen=True)
class PubJob:
    port: int
    devices: list[str]
    crossing: frozenset[str]
    count: int
    rate: float  # readings/s; 0 = as fast as possible
    lat_device: str | None = None
    prefix: str = "zigbee2mqtt"


def _payload(value: float, sent_ns: int | None = None) -> bytes:
    if sent_ns is None:
        return b'{"temperature":%r,"linkquality":96}' % value
    return b'{"temperature":%r,"linkquality":96,"sent_ns":%d}' % (value, sent_ns)


def publisher_client(
    port: int, name: str, queued: int, on_publish: Callable[..., None] | None = None
) -> mqtt.Client:
    """A connected paho publisher (``TCP_NODELAY``, its network thread started): at most
    ``queued`` messages waiting in paho (0: no bound), 1000 in flight."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{name}-{uuid.uuid4().hex[:8]}")
    client.max_queued_messages_set(queued)
    client.max_inflight_messages_set(1000)
    connected = threading.Event()
    client.on_connect = lambda *_: connected.set()
    if on_publish is not None:
        client.on_publish = on_publish
    client.connect("127.0.0.1", port)
    sock = client.socket()
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client.loop_start()
    connected.wait(15)
    return client


def _publish_child(job: PubJob, out: mp.Queue[dict[str, Any]]) -> None:
    acked = [0]
    client = publisher_client(job.port, "bench-pub", 20_000, lambda *_: acked.__setitem__(0, acked[0] + 1))
    per_device = dict.fromkeys(job.devices, 0)
    sends: list[int] = []
    n_dev = len(job.devices)
    c = 0
    began = time.monotonic()
    for i in range(job.count):
        if job.rate:
            wait = began + i / job.rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        if job.lat_device is not None and i % LAT_EVERY == 0:
            j = len(sends)
            value = (THRESHOLD + 10 if j % 2 == 0 else THRESHOLD - 10) + j * 1e-6
            sent = time.time_ns()
            sends.append(sent)
            topic, body = f"{job.prefix}/{job.lat_device}", _payload(value, sent)
        else:
            dev = job.devices[c % n_dev]
            c += 1
            k = per_device[dev]
            per_device[dev] = k + 1
            high = dev in job.crossing and (k // CROSS_EVERY) % 2 == 1
            value = (THRESHOLD + 10 if high else THRESHOLD - 10) + k * 1e-6
            topic, body = f"{job.prefix}/{dev}", _payload(value)
        pause = 0.0005
        while client.publish(topic, body, qos=1).rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
            time.sleep(pause)
            pause = min(pause * 2, 0.02)
    elapsed = time.monotonic() - began
    deadline = time.monotonic() + 60
    while acked[0] < job.count and time.monotonic() < deadline:
        time.sleep(0.01)
    client.disconnect()
    client.loop_stop()
    out.put(
        {"sent": job.count, "acked": acked[0], "elapsed": elapsed, "per_device": per_device, "sends": sends}
    )


@contextlib.contextmanager
def publishers(
    jobs: Sequence[object], target: Callable[[Any, Any], None] | None = None
) -> Iterator[list[dict[str, Any]]]:
    """Run one process per job (``target(job, results)``, default the :class:`PubJob`
    publisher); yields their results once all are done. Kills them on exit."""
    ctx = mp.get_context("spawn")
    results: mp.Queue[dict[str, Any]] = ctx.Queue()
    child = target or _publish_child
    procs = [ctx.Process(target=child, args=(job, results), daemon=True) for job in jobs]
    try:
        for proc in procs:
            proc.start()
        got: list[dict[str, Any]] = []
        while len(got) < len(procs):
            try:
                got.append(results.get(timeout=1.0))
            except queue.Empty:
                if not any(p.is_alive() for p in procs) and results.empty():
                    raise RuntimeError("a publisher process died") from None
        yield got
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
            proc.join(timeout=5)


def burst_jobs(port: int, layout: Layout, count: int, processes: int, prefix: str) -> list[PubJob]:
    devices = [d for d in layout.devices if d not in layout.latency]
    crossing = frozenset(layout.crossing)
    shards = [devices[k::processes] for k in range(processes)]
    per = count // processes
    return [
        PubJob(port, shard, crossing, per + (1 if k < count - per * processes else 0), 0.0, prefix=prefix)
        for k, shard in enumerate(shards)
    ]


# ---------------------------------------------------------------------- observers
class KafkaCounter(threading.Thread):
    """A read_committed consumer of the readings topic: unique ce_ids and unique readings."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(daemon=True)
        self.consumer = confluent_kafka.Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"bench-{uuid.uuid4().hex[:6]}",
                "isolation.level": "read_committed",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        self.consumer.subscribe([topic])
        self.records = 0
        self.ce_ids: set[str | bytes] = set()
        self.readings: set[tuple[str, float]] = set()
        self.last_new = 0.0
        self.first_ms = 0  # LogAppendTime (epoch ms) of the first and the last record
        self.last_ms = 0
        self.halt = threading.Event()

    def run(self) -> None:
        try:
            while not self.halt.is_set():
                for msg in self.consumer.consume(2000, timeout=0.1):
                    if msg.error() is not None:
                        continue
                    self.records += 1
                    ts = msg.timestamp()[1]
                    self.first_ms = min(self.first_ms or ts, ts)
                    self.last_ms = max(self.last_ms, ts)
                    ce_id = dict(msg.headers() or []).get("ce_id") or b""
                    data = json.loads(msg.value() or b"{}")
                    before = len(self.ce_ids)
                    self.ce_ids.add(ce_id)
                    self.readings.add((data.get("device_id", ""), data.get("value", 0.0)))
                    if len(self.ce_ids) > before:
                        self.last_new = time.monotonic()
        finally:
            self.consumer.close()


class CommandListener:
    """A QoS 1 subscriber on actuator command topics: arrival times (time.time_ns) per topic."""

    def __init__(self, port: int, topics: list[str]) -> None:
        self.arrivals: dict[str, list[tuple[int, bytes]]] = {}
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-cmd-{uuid.uuid4().hex[:6]}")
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        sock = self.client.socket()
        if isinstance(sock, socket.socket):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.client.subscribe([(t, 1) for t in topics])
        self.client.loop_start()
        if not subscribed.wait(15):
            raise RuntimeError("command listener: no SUBACK")

    def _on_message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        self.arrivals.setdefault(msg.topic, []).append((time.time_ns(), bytes(msg.payload)))

    def count(self) -> int:
        return sum(len(v) for v in self.arrivals.values())

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# ---------------------------------------------------------------------- phases
@dataclass
class Figures:
    ready_seconds: list[float] = field(default_factory=list)
    ready_wall: list[float] = field(default_factory=list)
    messages: int = 0
    publish_rate: float = 0.0
    bare_rate: float = 0.0
    ingest_rate: float = 0.0
    kafka_rate: float = 0.0
    kafka_seconds: float = 0.0
    kafka_span_rate: float = 0.0
    kafka_span_seconds: float = 0.0
    lost: int = 0
    dup_ids: int = 0
    dup_readings: int = 0
    commands_expected: int = 0
    commands_seen: int = 0
    rss: float = 0.0
    hwm: float = 0.0
    cpu_per_k: float = 0.0
    thread_cpu_per_k: dict[str, float] = field(default_factory=dict)
    rss_idle: float = 0.0
    rss_end: float = 0.0
    slowest_scrape: float = 0.0
    scrape_failures: int = 0
    latency: dict[int, Latency] = field(default_factory=dict)
    latency_bare: dict[int, Latency] = field(default_factory=dict)
    latency_cpu_per_k: dict[int, float] = field(default_factory=dict)
    backlog: list[BacklogRun] = field(default_factory=list)
    outage: OutageRun | None = None


def phase_ready(config: Path, work: Path, http_port: int, figures: Figures, starts: int) -> None:
    for _ in range(starts):
        gw = Gateway(config, work, http_port)
        try:
            gw.wait_ready()
            figures.ready_seconds.append(gw.ready_seconds)
            figures.ready_wall.append(gw.ready_at - gw.spawned)
            time.sleep(1.0)
            figures.rss_idle = gw.memory_mb()[0]
        finally:
            gw.stop()
        print(
            f"  start: ready {gw.ready_seconds:.3f} s (log), {gw.ready_at - gw.spawned:.3f} s from spawn",
            flush=True,
        )


def phase_throughput(
    config: Path,
    work: Path,
    http_port: int,
    broker: Mosquitto,
    node: KafkaNode,
    layout: Layout,
    topics: dict[str, str],
    figures: Figures,
    count: int,
    processes: int,
    profile: Profiler | None,
) -> Gateway:
    bare_id = f"bench-bare-{uuid.uuid4().hex[:6]}"
    bare_register(broker, bare_id, ["zigbee2mqtt/+"], "3.1.1")
    with publishers(burst_jobs(broker.port, layout, count, processes, "zigbee2mqtt")) as results:
        sent = sum(r["sent"] for r in results)
        figures.publish_rate = sent / max(r["elapsed"] for r in results)
        expected = 0
        for result in results:
            for dev, k in result["per_device"].items():
                if dev in layout.crossing and k > 0:
                    expected += (k - 1) // CROSS_EVERY
    figures.messages = sent
    figures.commands_expected = expected
    print(
        f"  published {sent:,} QoS 1 readings at {figures.publish_rate:,.0f}/s ({processes} processes)",
        flush=True,
    )
    figures.bare_rate = bare_drain(broker, bare_id, sent, "3.1.1")
    forget_session(broker.port, bare_id)  # or the broker queues every later reading for it
    print(f"  bare paho subscriber drained at {figures.bare_rate:,.0f} msg/s", flush=True)

    counter = KafkaCounter(node.bootstrap, topics["readings"])
    counter.start()
    listener = CommandListener(broker.port, ["zigbee2mqtt/+/set"])
    gw = Gateway(config, work, http_port)
    try:
        gw.wait_ready()
        cpu0 = gw.cpu_seconds()
        threads0 = gw.thread_cpu()
        if profile is not None:
            profile.start(gw.pid, "throughput drain (rules, spool, Kafka)", max(2.0, 0.7 * sent / 25_000))
        t0 = gw.ready_at
        ingest_done = 0.0
        samples: list[tuple[float, float]] = []  # (time, readings) while the drain runs
        deadline = time.monotonic() + max(120.0, sent / 2000)
        while time.monotonic() < deadline:
            if not ingest_done:
                seen = gw.readings()
                now = time.monotonic()
                if seen is None:
                    pass
                elif seen >= sent:
                    ingest_done = now
                elif seen:
                    samples.append((now, seen))
            if ingest_done and len(counter.ce_ids) >= sent:
                break
            time.sleep(POLL_S)
        kafka_done = counter.last_new
        cpu1 = gw.cpu_seconds()
        threads1 = gw.thread_cpu()
        if profile is not None:
            profile.finish()
        time.sleep(3.0)  # late duplicates, if any, would show up now
    except BaseException:
        gw.stop()
        raise
    finally:
        counter.halt.set()
        counter.join(timeout=10)
        listener.close()
    figures.ingest_rate = _ingest_rate(samples, sent, t0, ingest_done)
    figures.kafka_seconds = kafka_done - t0
    figures.kafka_rate = len(counter.ce_ids) / figures.kafka_seconds if figures.kafka_seconds > 0 else 0.0
    figures.kafka_span_seconds = (counter.last_ms - counter.first_ms) / 1000
    if figures.kafka_span_seconds > 0:
        figures.kafka_span_rate = (counter.records - 1) / figures.kafka_span_seconds
    figures.lost = max(0, sent - len(counter.readings))
    figures.dup_ids = counter.records - len(counter.ce_ids)
    figures.dup_readings = counter.records - len(counter.readings)
    figures.commands_seen = listener.count()
    figures.slowest_scrape = gw.slowest_scrape
    figures.scrape_failures = gw.scrape_failures
    figures.rss, figures.hwm = gw.memory_mb()
    figures.cpu_per_k = (cpu1 - cpu0) / (sent / 1000)
    figures.thread_cpu_per_k = {
        name: (cpu - threads0.get(name, 0.0)) / (sent / 1000) for name, cpu in threads1.items()
    }
    print(
        f"  edgegw took them at {figures.ingest_rate:,.0f}/s; Kafka had all {len(counter.ce_ids):,} "
        f"after {figures.kafka_seconds:.2f} s ({figures.kafka_span_rate:,.0f}/s first to last appended); "
        f"lost {figures.lost}, duplicated {figures.dup_readings}; "
        f"commands {figures.commands_seen}/{expected}; RSS {figures.rss:.1f} MiB",
        flush=True,
    )
    return gw


def forget_session(port: int, client_id: str) -> None:
    """Connect once with a clean session: the broker drops the persistent one of ``client_id``."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
    connected = threading.Event()
    client.on_connect = lambda *_: connected.set()
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        if not connected.wait(15):
            raise RuntimeError(f"cannot connect to clear the session of {client_id}")
    finally:
        client.disconnect()
        client.loop_stop()


def _ingest_rate(samples: list[tuple[float, float]], sent: int, t0: float, done: float) -> float:
    """Readings/s while the backlog drained: the slope between the first and the last scrape
    that saw part of it (scrapes are POLL_S apart: the endpoints are only known that well)."""
    if len(samples) >= 3:
        (ta, ca), (tb, cb) = samples[0], samples[-1]
        return (cb - ca) / (tb - ta)
    return sent / (done - t0) if done else 0.0


def _echo_child(port: int, prefix: str, device: str, actuator: str, started: Any) -> None:
    """The bare reference of the rule path: a paho client that parses every reading (QoS 1)
    and publishes ON/OFF to the actuator's topic when ``device`` crosses the threshold."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-echo-{uuid.uuid4().hex[:6]}")
    client.max_queued_messages_set(1000)
    want = f"{prefix}/{device}"
    out_topic = f"{prefix}/{actuator}/set"
    state = [False]

    def on_message(c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        if msg.topic == "bench/echo/stop":
            c.disconnect()
            return
        value = json.loads(msg.payload)["temperature"]
        if msg.topic == want and (value > THRESHOLD) != state[0]:
            state[0] = not state[0]
            c.publish(out_topic, b'{"state":"ON"}' if state[0] else b'{"state":"OFF"}', qos=1)

    def on_connect(c: mqtt.Client, *_: object) -> None:
        c.subscribe([(f"{prefix}/+", 1), ("bench/echo/stop", 1)])

    client.on_message = on_message
    client.on_connect = on_connect
    client.on_subscribe = lambda *_: started.set()
    client.connect("127.0.0.1", port)
    sock = client.socket()
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client.loop_forever()


@contextlib.contextmanager
def _echo(port: int, device: str) -> Iterator[None]:
    """The bare reference's echo client (``_echo_child``) on the ``bare/`` topics, in a process
    of its own, for the time of the block."""
    ctx = mp.get_context("spawn")
    started = ctx.Event()
    echo = ctx.Process(
        target=_echo_child, daemon=True, args=(port, "bare", device, Layout.actuator(device), started)
    )
    echo.start()
    try:
        started.wait(15)
        yield
        with contextlib.suppress(OSError):
            stopper = mqtt.Client(CallbackAPIVersion.VERSION2)
            stopper.connect("127.0.0.1", port)
            stopper.publish("bench/echo/stop", b"", qos=0)
            stopper.loop(0.2)
            stopper.disconnect()
        echo.join(timeout=5)
    finally:
        if echo.is_alive():
            echo.kill()
            echo.join()


@dataclass(frozen=True)
class LatencyRun:
    """One paced run: send times of the crossings, (arrival time, body) of the commands."""

    sends: list[int]
    arrivals: list[tuple[int, bytes]]
    count: int
    elapsed: float

    def summary(self, window: tuple[int, int] | None = None) -> Latency:
        return summarise(self.sends, self.arrivals, self.count, self.elapsed, window)


def run_latency(port: int, layout: Layout, rate: int, device: str, seconds: float, prefix: str) -> LatencyRun:
    topic = f"{prefix}/{Layout.actuator(device)}/set"
    listener = CommandListener(port, [topic])
    count = int(rate * seconds)
    job = PubJob(port, layout.background, frozenset(), count, float(rate), lat_device=device, prefix=prefix)
    try:
        with publishers([job]) as results:
            sends: list[int] = results[0]["sends"]
            elapsed: float = results[0]["elapsed"]
        deadline = time.monotonic() + 10
        while len(listener.arrivals.get(topic, [])) < len(sends) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        listener.close()
    return LatencyRun(sends, listener.arrivals.get(topic, []), count, elapsed)


def measure_latency(
    port: int, layout: Layout, rate: int, device: str, seconds: float, prefix: str
) -> Latency:
    return run_latency(port, layout, rate, device, seconds, prefix).summary()


def phase_latency(
    gw: Gateway,
    broker: Mosquitto,
    layout: Layout,
    figures: Figures,
    rate: int,
    device: str,
    seconds: float,
    profile: Profiler | None,
) -> None:
    cpu0 = gw.cpu_seconds()
    if profile is not None:
        profile.start(gw.pid, f"latency {rate // 1000}k/s", seconds * 0.8)
    ours = measure_latency(broker.port, layout, rate, device, seconds, "zigbee2mqtt")
    figures.latency_cpu_per_k[rate] = (gw.cpu_seconds() - cpu0) / (rate * seconds / 1000)
    if profile is not None:
        profile.finish()
    with _echo(broker.port, device):
        bare = measure_latency(broker.port, layout, rate, device, seconds, "bare")
    figures.latency[rate] = ours
    figures.latency_bare[rate] = bare
    for who, r in (("edgegw", ours), ("bare paho rule", bare)):
        print(
            f"  {rate}/s (achieved {r.achieved:,.0f}/s) {who}: {r.seen}/{r.sent} commands, "
            f"p50 {r.p50:.2f} ms, "
            f"p99 {r.p99:.2f} ms, max {r.worst:.2f} ms, out of order {r.wrong}",
            flush=True,
        )


@dataclass(frozen=True)
class Bed:
    """What the gateways of the backlog and outage phases share; each gets fresh topics and state."""

    work: Path
    broker: Mosquitto
    node: KafkaNode
    layout: Layout
    devices: list[dict[str, Any]]
    http_port: int
    prefix: str

    def gateway_config(self, name: str) -> tuple[Path, dict[str, str]]:
        topics = make_topics(self.node, f"{self.prefix}-{name}")
        config = self.work / f"edgegw-{name}.yaml"
        write_config(
            config,
            self.layout,
            self.devices,
            mqtt_port=self.broker.port,
            bootstrap=self.node.bootstrap,
            topics=topics,
            http_port=self.http_port,
            state=self.work / f"state-{name}",
        )
        return config, topics


def make_topics(node: KafkaNode, prefix: str) -> dict[str, str]:
    """The gateway's topics (the checkpoints topic is the gateway's to create); the broker
    stamps the readings (LogAppendTime): when each arrived in Kafka."""
    topics = {
        kind: f"{prefix}.{kind}" for kind in ("readings", "events", "commands", "heartbeats", "checkpoints")
    }
    node.create_topic(topics["readings"], partitions=3, config={"message.timestamp.type": "LogAppendTime"})
    for kind in ("events", "commands", "heartbeats"):
        node.create_topic(topics[kind])
    return topics


def wait_metrics(
    gw: Gateway, what: str, ok: Callable[[dict[str, float]], bool], timeout: float = 60.0, every: float = 0.5
) -> dict[str, float]:
    """Scrape /metrics until ``ok`` holds; the last scrape."""
    deadline = time.monotonic() + timeout
    while True:
        series = gw.scrape()
        if series is not None and ok(series):
            return series
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {timeout:g} s:\n" + "\n".join(gw.tail))
        time.sleep(every)


def _probe_drain(gw: Gateway, run: BacklogRun, halt: threading.Event) -> None:
    """Scrape /metrics until it shows backlog rows shipped (the drain under way) or ``halt``."""
    while not halt.is_set():
        series = gw.scrape()
        if series is not None and metric(series, "edgegw_forwarder_sent_total") > 0:
            run.probe_after = time.monotonic() - gw.ready_at
            run.probe_shipped = metric(series, "edgegw_forwarder_sent_total")
            run.probe_depth = metric(series, "edgegw_spool_depth")
            run.probe_uplink = uplink_state(series)
            print(
                f"  /metrics {run.probe_after:.1f} s after READY: drain under way, "
                f"uplink {run.probe_uplink}, {run.probe_shipped:,.0f} shipped, "
                f"{run.probe_depth:,.0f} rows in the spool",
                flush=True,
            )
            return
        halt.wait(0.25)


def phase_backlog(
    bed: Bed, rate: int, device: str, events: int, seconds: float, *, bare: bool = False
) -> BacklogRun:
    """Pre-fill a fresh spool with ``events`` readings, start a gateway on it with Kafka up,
    and measure paced latency at ``rate`` from READY on while its forwarder drains them. The
    crossings that count are those sent between the first and the last backlog record's
    arrival in Kafka (LogAppendTime); /metrics shows the drain under way meanwhile.

    ``bare``: the same drain, but the latency is the bare reference's (``_echo_child`` on the
    ``bare/`` topics, which the gateway does not subscribe to): what the drain's load (the
    uplink process, Kafka and Mosquitto on the same cores) costs a client that does nothing
    else."""
    run = BacklogRun(rate, events, who="bare" if bare else "edgegw")
    config, topics = bed.gateway_config(f"backlog-{rate // 1000}k{'-bare' if bare else ''}")
    run.fill_seconds = prefill_spool(config, bed.layout.devices, events)
    print(f"  {rate}/s: spool pre-filled with {events:,} readings in {run.fill_seconds:.1f} s", flush=True)
    gw = Gateway(config, bed.work, bed.http_port)
    halt = threading.Event()
    probe = threading.Thread(target=_probe_drain, args=(gw, run, halt), daemon=True)
    try:
        gw.wait_ready(timeout=120)
        run.ready_wall = time.time() - (time.monotonic() - gw.ready_at)
        with _echo(bed.broker.port, device) if bare else contextlib.nullcontext():
            probe.start()
            lat = run_latency(
                bed.broker.port, bed.layout, rate, device, seconds, "bare" if bare else "zigbee2mqtt"
            )
        run.live = 0 if bare else lat.count
        if lat.sends:
            run.window_ns = (lat.sends[0], lat.sends[-1])
        halt.set()
        probe.join(timeout=15)
        run.audit = audit_topic(
            bed.node.bootstrap,
            topics["readings"],
            backlog=events,
            live=run.live,
            timeout=max(120.0, (events + lat.count) / 5000),
        )
        run.latency = lat.summary(run.drain_ns)
        run.latency_all = lat.summary()
        run.rss, run.hwm = gw.memory_mb()
    finally:
        halt.set()
        gw.stop()
    a, r = run.audit, run.latency
    print(
        f"  {'bare reference: ' if bare else ''}backlog in Kafka {run.drain_seconds:.1f} s after READY "
        f"({run.drain_rate:,.0f}/s); the drain covered {run.window_in_drain:.0%} of the window; during it "
        f"p50 {r.p50:.2f} ms, p99 {r.p99:.2f} ms, max {r.worst:.2f} ms ({r.seen}/{r.sent} commands, out of "
        f"order {r.wrong}); backlog lost {a.backlog_lost} dup {a.backlog_dup}, live lost {a.live_lost} dup "
        f"{a.live_dup}; RSS {run.rss:.1f} MiB",
        flush=True,
    )
    return run


def phase_outage(bed: Bed, seconds: float, rate: int, device: str) -> OutageRun:
    """A fresh gateway, Kafka stopped, ``rate`` readings/s for ``seconds`` (VmRSS every 5 s),
    Kafka started again: how long until the spool is empty, and whether all arrived once."""
    run = OutageRun(seconds, rate)
    config, topics = bed.gateway_config("outage")
    gw = Gateway(config, bed.work, bed.http_port)
    try:
        gw.wait_ready()
        wait_metrics(gw, "the uplink to be up", lambda m: uplink_state(m) == "up")
        time.sleep(2.0)
        run.rss_before = gw.memory_mb()[0]
        began = time.monotonic()
        bed.node.stop()
        run.kafka_stop_s = time.monotonic() - began
        print(
            f"  Kafka stopped ({run.kafka_stop_s:.1f} s); VmRSS {run.rss_before:.1f} MiB; "
            f"{rate}/s for {seconds:g} s",
            flush=True,
        )
        sampler = RssSampler(lambda: gw.memory_mb()[0])
        sampler.start()
        try:
            lat = run_latency(bed.broker.port, bed.layout, rate, device, seconds, "zigbee2mqtt")
        finally:
            run.samples = sampler.finish()
        run.rss_end, run.hwm_end = gw.memory_mb()
        run.depth_end = metric(gw.scrape() or {}, "edgegw_spool_depth")
        run.latency, run.live = lat.summary(), lat.count
        samples = run.samples or [float("nan")]
        print(
            f"  outage over: VmRSS median {statistics.median(samples):.1f}, max {max(samples):.1f}, "
            f"end {run.rss_end:.1f} MiB; {run.depth_end:,.0f} rows in the spool; commands "
            f"{run.latency.seen}/{run.latency.sent}",
            flush=True,
        )
        began = time.monotonic()
        bed.node.start(timeout=180)
        run.kafka_start_s = time.monotonic() - began
        run.kafka_ready_wall = time.time()
        print(f"  Kafka back ({run.kafka_start_s:.1f} s); waiting for the spool to empty", flush=True)
        wait_metrics(
            gw,
            "the outage backlog to drain",
            lambda m: metric(m, "edgegw_spool_depth") == 0,
            timeout=max(300.0, lat.count / 1000),
            every=1.0,
        )
        run.audit = audit_topic(
            bed.node.bootstrap,
            topics["readings"],
            backlog=0,
            live=lat.count,
            timeout=max(120.0, lat.count / 5000),
        )
        run.rss_after = gw.memory_mb()[0]
    finally:
        gw.stop()
    a = run.audit
    print(
        f"  drained {run.drain_seconds:.1f} s after Kafka was back; lost {a.live_lost}, duplicated "
        f"{a.live_dup}; VmRSS {run.rss_after:.1f} MiB",
        flush=True,
    )
    return run


class Profiler:
    """py-spy (when installed next to this Python) sampling the gateway; top frames by own time."""

    def __init__(self, work: Path) -> None:
        self.binary = Path(sys.executable).with_name("py-spy")
        self.work = work
        self.proc: subprocess.Popen[bytes] | None = None
        self.label = ""
        self.out = work / "profile.txt"
        self.tables: list[str] = []

    @property
    def available(self) -> bool:
        return self.binary.exists()

    def start(self, pid: int, label: str, seconds: float) -> None:
        self.label = label
        self.out = self.work / f"profile-{len(self.tables)}.txt"
        self.proc = subprocess.Popen(
            [
                str(self.binary),
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(max(1, int(seconds))),
                "--rate",
                "200",
                "--nonblocking",
                "--format",
                "raw",
                "--output",
                str(self.out),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def finish(self) -> None:
        if self.proc is None:
            return
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        own: dict[str, int] = {}
        inclusive: dict[str, int] = {}
        total = 0
        if not self.out.exists():
            return
        for line in self.out.read_text().splitlines():
            stack, _, n = line.rpartition(" ")
            if not n.isdigit():
                continue
            count = int(n)
            total += count
            frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
            own[frames[-1]] = own.get(frames[-1], 0) + count
            for name in set(frames):
                inclusive[name] = inclusive.get(name, 0) + count
        if not total:
            return
        top = sorted(own.items(), key=lambda kv: -kv[1])[:10]
        lines = [
            f"### py-spy, {self.label}: top 10 frames by own time ({total} samples, busy threads only)",
            "",
            "| own | incl. | frame |",
            "|---|---|---|",
        ]
        lines += [f"| {n / total:.1%} | {inclusive[name] / total:.1%} | `{name}` |" for name, n in top]
        self.tables.append("\n".join(lines))
        print("\n" + self.tables[-1], flush=True)


# ---------------------------------------------------------------------- report
def machine() -> list[str]:
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    ).stdout.strip()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return [
        f"- code: {git_rev()}{' with uncommitted changes in the tree' if dirty else ''}; "
        f"load average (1 min) at the start {LOAD_AT_START[0]:.2f}, at the end {load:.2f} "
        "(other work on the machine perturbs every figure)",
        *machine_lines(),
    ]


def report(fig: Figures, args: argparse.Namespace, devices: int, rules: int, profiles: list[str]) -> str:
    ready_s = statistics.median(fig.ready_seconds)
    ready_w = statistics.median(fig.ready_wall)
    ratio = fig.ingest_rate / fig.bare_rate if fig.bare_rate else 0.0
    kratio = fig.kafka_rate / fig.bare_rate if fig.bare_rate else 0.0
    sratio = fig.kafka_span_rate / fig.bare_rate if fig.bare_rate else 0.0
    rows = [
        (
            "READY (log `seconds`, median of 3)",
            f"{ready_s:.3f} s",
            "<= 1.5 s",
            met(ready_s <= TARGETS["ready"]),
        ),
        (
            "READY (wall, spawn to log line, median of 3)",
            f"{ready_w:.3f} s",
            "<= 1.5 s",
            met(ready_w <= TARGETS["ready"]),
        ),
        (
            "publishers (QoS 1, preload)",
            f"{fig.publish_rate:,.0f} msg/s ({args.processes} processes)",
            "",
            "",
        ),
        ("bare paho subscriber, QoS 1 drain", f"{fig.bare_rate:,.0f} msg/s", "reference", ""),
        ("edgegw ingest (edgegw_readings_total)", f"{fig.ingest_rate:,.0f} readings/s", "", ""),
        (
            "slowest /metrics answer during the drain (scrapes that timed out at 10 s)",
            f"{fig.slowest_scrape:.2f} s ({fig.scrape_failures})",
            "",
            "",
        ),
        ("edgegw / bare (ingest)", f"{ratio:.2f}", ">= 0.8", met(ratio >= TARGETS["ratio"])),
        (
            "all readings in Kafka (read_committed) after READY",
            f"{fig.kafka_seconds:.2f} s = {fig.kafka_rate:,.0f} readings/s",
            "",
            "",
        ),
        (
            "edgegw / bare (end to end, exactly once)",
            f"{kratio:.2f}",
            f">= {TARGETS['eos_ratio']:g}",
            met(kratio >= TARGETS["eos_ratio"]),
        ),
        (
            "all readings in Kafka, first to last record appended (broker LogAppendTime)",
            f"{fig.kafka_span_seconds:.2f} s = {fig.kafka_span_rate:,.0f} readings/s",
            "",
            "",
        ),
        (
            "edgegw / bare (end to end, first to last record in Kafka)",
            f"{sratio:.2f}",
            f">= {TARGETS['eos_ratio']:g}",
            met(sratio >= TARGETS["eos_ratio"]),
        ),
        (
            "lost / duplicated in Kafka (readings; ce_id dups)",
            f"{fig.lost} / {fig.dup_readings} ({fig.dup_ids})",
            "0 / 0",
            met(fig.lost == 0 and fig.dup_readings == 0),
        ),
        (
            "commands on actuator topics / expected",
            f"{fig.commands_seen:,} / {fig.commands_expected:,}",
            "equal",
            met(fig.commands_seen == fig.commands_expected),
        ),
    ]
    for rate, target in ((1000, TARGETS["p99_1k"]), (5000, TARGETS["p99_5k"])):
        if rate in fig.latency:
            r = fig.latency[rate]
            rows.append(
                (
                    f"sensor -> actuator at {rate // 1000}k readings/s, p50 / p99 / max",
                    f"{r.p50:.2f} / {r.p99:.2f} / {r.worst:.2f} ms ({r.seen}/{r.sent} commands)",
                    f"p99 <= {target:.0f} ms",
                    met(r.p99 <= target and r.seen == r.sent),
                )
            )
        if rate in fig.latency_bare:
            b = fig.latency_bare[rate]
            rows.append(
                (
                    f"  same through a bare paho rule client (reference), {rate // 1000}k/s",
                    f"{b.p50:.2f} / {b.p99:.2f} / {b.worst:.2f} ms ({b.seen}/{b.sent} commands); "
                    f"edgegw p99 = {r.p99 / b.p99:.2g}x",
                    "reference",
                    "",
                )
            )
    rows += backlog_rows(fig.backlog, {1000: TARGETS["p99_1k"], 5000: TARGETS["p99_5k"]})
    rows += [
        ("VmRSS idle after READY (no readings yet)", f"{fig.rss_idle:.1f} MiB", "", ""),
        (
            f"VmRSS after throughput ({rules} rules, {devices} devices); VmHWM",
            f"{fig.rss:.1f} MiB; {fig.hwm:.1f} MiB",
            "<= 50 MB",
            met(fig.rss * 1.048576 <= TARGETS["rss"]),
        ),
        ("VmRSS at the end (after the latency phases)", f"{fig.rss_end:.1f} MiB", "", ""),
        (
            "CPU per 1,000 readings (throughput: rules, spool, Kafka)",
            f"{fig.cpu_per_k * 1000:.1f} ms",
            "",
            "",
        ),
    ]
    split = sorted(((c, n) for n, c in fig.thread_cpu_per_k.items() if c >= 0.00005), reverse=True)
    if split:
        text = ", ".join(f"{n} {c * 1000:.1f} ms" for c, n in split)
        rows.append(("  by thread (throughput)", text, "", ""))
    for rate, cpu in sorted(fig.latency_cpu_per_k.items()):
        rows.append((f"CPU per 1,000 readings at {rate // 1000}k/s paced", f"{cpu * 1000:.1f} ms", "", ""))
    if fig.outage is not None:
        rows += outage_rows(fig.outage, TARGETS["rss"])
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    command = " ".join([".venv/bin/python -m bench.e2e_bench", *args.argv])
    lines = [
        f"# edgegw end to end, {stamp}",
        "",
        f"`{command}`: {fig.messages:,} QoS 1 readings for throughput, "
        f"{args.latency_seconds:g} s per latency rate"
        f"{'' if args.no_backlog else f', idle uplink and draining a {args.backlog_events:,}-event backlog'}"
        f"{'' if args.no_outage else f'; a {args.outage_seconds:g} s Kafka outage at 1k readings/s'}; "
        f"{devices} Zigbee2MQTT sensors, {rules} threshold rules, "
        f"{rules} Zigbee2MQTT actuators, Kafka exactly_once; nothing pinned; Mosquitto "
        + (
            "set_tcp_nodelay false (Debian's default, Nagle on: `--broker-default`)"
            if args.broker_default
            else "set_tcp_nodelay true (the bench default, as docs recommend for low latency)"
        )
        + f"{'; py-spy sampling the gateway (it perturbs the figures)' if args.profile else ''}.",
        "",
        *machine(),
        "",
        "| figure | value | target | |",
        "|---|---|---|---|",
        *(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows),
        "",
    ]
    for table in profiles:
        lines += [table, ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------- main
def _interrupted(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smaller counts: the whole run in about 4 minutes (1 without the outage)",
    )
    parser.add_argument("--messages", type=int, help="throughput readings (default 300k, quick 60k)")
    parser.add_argument("--latency-seconds", type=float, help="per latency rate (default 30, quick 6)")
    parser.add_argument("--processes", type=int, default=3, help="publisher processes for the preload")
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--rules", type=int, default=100)
    parser.add_argument("--no-write", action="store_true", help="print only; write nothing to bench/results")
    parser.add_argument(
        "--backlog-events",
        type=int,
        help="spool backlog the uplink drains in the backlog phase (default 1M, quick 100k)",
    )
    parser.add_argument(
        "--no-backlog", action="store_true", help="skip the latency phase under a backlog drain"
    )
    parser.add_argument(
        "--outage-seconds", type=float, help="Kafka outage under load (default 600, quick 60)"
    )
    parser.add_argument("--no-outage", action="store_true", help="skip the Kafka outage phase")
    nagle = parser.add_mutually_exclusive_group()
    nagle.add_argument(
        "--broker-default",
        action="store_true",
        help="the test Mosquitto without set_tcp_nodelay (Debian's default: Nagle on)",
    )
    nagle.add_argument(
        "--broker-nodelay",
        action="store_true",
        help="set_tcp_nodelay true in the test Mosquitto: the default now, accepted for old command lines",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="sample the gateway with py-spy (pip install py-spy) in the drain and at 5k/s",
    )
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    LOAD_AT_START[0] = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    messages = args.messages or (60_000 if args.quick else 300_000)
    args.latency_seconds = args.latency_seconds or (6.0 if args.quick else 30.0)
    args.backlog_events = args.backlog_events or (100_000 if args.quick else 1_000_000)
    args.outage_seconds = args.outage_seconds or (60.0 if args.quick else 600.0)
    layout, gateway_devices = make_layout(args.devices, args.rules)
    figures = Figures()
    signal.signal(signal.SIGTERM, _interrupted)  # a SIGTERM cleans up like Ctrl-C
    with tempfile.TemporaryDirectory(prefix="edgegw-e2e-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        print("starting Mosquitto and Kafka ...", flush=True)
        broker, node = start_brokers(stack, work, nodelay=not args.broker_default)
        assert node is not None  # asked for (kafka=True)
        prefix = f"e2e-{uuid.uuid4().hex[:6]}"
        topics = make_topics(node, prefix)
        http_port = free_port()
        config = work / "edgegw.yaml"
        write_config(
            config,
            layout,
            gateway_devices,
            mqtt_port=broker.port,
            bootstrap=node.bootstrap,
            topics=topics,
            http_port=http_port,
            state=work / "state",
        )
        print(
            f"mosquitto {broker.host}:{broker.port}, kafka {node.bootstrap}; {args.devices} devices, "
            f"{args.rules} rules",
            flush=True,
        )
        print("1. READY", flush=True)
        phase_ready(config, work, http_port, figures, 3)
        print(f"2. throughput: {messages:,} readings", flush=True)
        profiler = Profiler(work) if args.profile else None
        if profiler is not None and not profiler.available:
            print(f"  no {profiler.binary}: profiling off (pip install py-spy)")
            profiler = None
        gw = phase_throughput(
            config, work, http_port, broker, node, layout, topics, figures, messages, args.processes, profiler
        )
        stack.callback(gw.stop)
        print(f"3. latency, {args.latency_seconds:g} s per rate", flush=True)
        for rate, device in zip((1000, 5000), layout.latency, strict=True):
            phase_latency(gw, broker, layout, figures, rate, device, args.latency_seconds, profiler)
        figures.rss_end = gw.memory_mb()[0]
        gw.stop()  # the next phases start gateways of their own (same MQTT client id and session)
        bed = Bed(work, broker, node, layout, gateway_devices, http_port, prefix)
        if not args.no_backlog:
            print(
                f"4. latency while the uplink drains a backlog of {args.backlog_events:,} events, "
                f"{args.latency_seconds:g} s per rate",
                flush=True,
            )
            for rate, device in zip((1000, 5000), layout.latency, strict=True):
                for bare in (False, True):
                    figures.backlog.append(
                        phase_backlog(bed, rate, device, args.backlog_events, args.latency_seconds, bare=bare)
                    )
        if not args.no_outage:
            print(f"5. Kafka outage of {args.outage_seconds:g} s at 1,000 readings/s", flush=True)
            figures.outage = phase_outage(bed, args.outage_seconds, 1000, layout.latency[0])
    text = report(figures, args, args.devices, args.rules, profiler.tables if profiler is not None else [])
    print()
    print(text)
    if not args.no_write:
        suffix = (
            ("-quick" if args.quick else "")
            + ("-profile" if profiler is not None else "")
            + ("-broker-default" if args.broker_default else "")
        )
        write_result("e2e", text, suffix)
    return 0


if __name__ == "__main__":
    sys.exit(main())
