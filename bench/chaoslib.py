"""The chaos scenarios against the real gateway, shared by ``bench.chaos`` and tests/chaos.

Every scenario runs ``python -m gateway run --config FILE`` as a subprocess (config
written here) against a test-bed Mosquitto and a test-bed Kafka (a KafkaNode, or a
three-node KafkaCluster for the failover), injects its fault, and then compares two
exact sets:

- **acknowledged**: every reading whose MQTT message the broker PUBACKed to the
  publisher (QoS 1). Each message carries a unique sequence number ``seq`` (global over
  the run; device ``c<seq % devices>``), so each reading has an identity
  ``(device, metric, seq)``. The first :data:`RULE_DEVICES` devices also carry a
  ``temperature`` that crosses a rule threshold every 5 samples; its value encodes the
  seq too (``20 or 35 + seq / 1e7``), so the rule path's readings are identified as well;
- **in Kafka**: every reading record on the readings topic, read with
  ``isolation.level=read_committed`` by a consumer that runs during the whole scenario
  (first-arrival time of each identity, for the time to recover).

``lost`` = acknowledged identities absent from Kafka (minus, for the disk-full scenario,
the rows the spool's overflow policy dropped and counted: those are reported as
``dropped``, not as lost); ``duplicated`` = records beyond the first of one identity,
plus duplicate ``ce_id`` headers. ``recovery`` = for each fault, the seconds from its end
(gateway restarted, Kafka or Mosquitto back, leader killed) until every reading
acknowledged before that moment was in Kafka.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import signal
import socket
import statistics
import struct
import subprocess
import sys
import termios
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from simulators.pty_device import PtyDevice
from simulators.testbed import (
    KafkaCluster,
    KafkaEndpoint,
    KafkaNode,
    Mosquitto,
    PowerCutFS,
    PowerCutStats,
    free_port,
)

__all__ = [
    "ChaosResult",
    "CutRecord",
    "GatewayProc",
    "KafkaWatch",
    "MqttWatch",
    "PowerCutOutcome",
    "PowerCutRun",
    "Publisher",
    "RuleRun",
    "Run",
    "StreamPublisher",
    "TopicRecord",
    "cut_points",
    "power_cut",
    "read_committed",
    "scenario_broker_restart",
    "scenario_disk_full",
    "scenario_kafka_outage",
    "scenario_leader_failover",
    "scenario_power_cuts",
    "scenario_serial_unplug",
    "scenario_sigkill",
    "scrape_metrics",
]

ROOT = Path(__file__).resolve().parent.parent
RULE_DEVICES = 4
THRESHOLD = 30.0
Identity = tuple[str, str, int]  # (device, metric, seq)


def _device(seq: int, devices: int) -> str:
    return f"c{seq % devices:03d}"


def _temperature(seq: int, devices: int) -> float:
    high = (seq // devices // 5) % 2 == 1
    return (35.0 if high else 20.0) + seq / 1e7


def _seq_of_temperature(value: float) -> int:
    base = 35.0 if value >= THRESHOLD else 20.0
    return round((value - base) * 1e7)


def identities(seq: int, devices: int) -> list[Identity]:
    """The readings the gateway makes of message ``seq``."""
    dev = _device(seq, devices)
    out: list[Identity] = [(dev, "seq", seq)]
    if seq % devices < RULE_DEVICES:
        out.append((dev, "temperature", seq))
    return out


def payload(seq: int, devices: int) -> bytes:
    if seq % devices < RULE_DEVICES:
        return b'{"seq":%d,"temperature":%r}' % (seq, _temperature(seq, devices))
    return b'{"seq":%d}' % seq


# ---------------------------------------------------------------------- the run's layout
@dataclass
class Run:
    """One scenario's files, ids and config."""

    work: Path
    broker: Mosquitto
    kafka: KafkaEndpoint
    devices: int = 20
    name: str = field(default_factory=lambda: f"chaos-{uuid.uuid4().hex[:8]}")
    spool_path: Path | None = None
    serial_port: str | None = None
    http_port: int = field(default_factory=free_port)
    spool_options: dict[str, Any] = field(default_factory=dict)
    """Extra ``bridge.spool`` settings (e.g. ``commit_interval``)."""
    mqtt_options: dict[str, Any] = field(default_factory=dict)
    """Extra ``mqtt`` settings (e.g. ``protocol: "5"``)."""

    def __post_init__(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        self.topics = {k: f"{self.name}.{k}" for k in ("readings", "events", "commands", "heartbeats",
                                                        "checkpoints")}  # fmt: skip
        for kind in ("readings", "events", "commands", "heartbeats"):
            self.kafka.create_topic(self.topics[kind])
        self.config_path = self.work / "edgegw.yaml"
        self.state = self.work / "state"
        self.write_config()

    @property
    def mqtt_prefix(self) -> str:
        return f"chaos/{self.name}"

    @property
    def spool(self) -> Path:
        return self.spool_path or self.state / "spool.db"

    def write_config(self) -> None:
        devices: list[dict[str, Any]] = []
        for i in range(self.devices):
            fields: dict[str, Any] = {"seq": {"metric": "seq", "type": "number"}}
            if i < RULE_DEVICES:
                fields["temperature"] = {"metric": "temperature", "unit": "°C", "type": "number"}
            devices.append({"id": f"c{i:03d}", "topic": f"{self.mqtt_prefix}/c{i:03d}", "profile": "json",
                            "fields": fields})  # fmt: skip
        if self.serial_port is not None:
            devices.append({"id": "uart", "transport": "serial", "profile": "kv",
                            "serial": {"port": self.serial_port, "baud": 115200, "reconnect_min": "100ms",
                                       "reconnect_max": "500ms"},
                            "fields": {"seq": {"metric": "seq", "type": "number"}}})  # fmt: skip
        actuators = [{"id": f"fan-{i}", "profile": "json", "topic": f"{self.mqtt_prefix}/act/fan-{i}"}
                     for i in range(RULE_DEVICES)]  # fmt: skip
        rules = [
            {"id": f"hot-c{i:03d}", "when": {"sensor": f"c{i:03d}/temperature", "above": THRESHOLD},
             "then": [{"set": f"fan-{i}", "to": {"state": "on"}}],
             "else": [{"set": f"fan-{i}", "to": {"state": "off"}}],
             "max_fires_per_minute": 1_000_000}
            for i in range(RULE_DEVICES)
        ]  # fmt: skip
        spool: dict[str, Any] = {"path": str(self.spool), **self.spool_options}
        if self.spool_path is not None:  # a small filesystem: a WAL that fits in it, a small reserve
            spool = {"reserve_bytes": "256KiB", "wal_autocheckpoint": 256, **spool}
        config = {
            "gateway": {"id": self.name, "state_dir": str(self.state)},
            "mqtt": {"host": self.broker.host, "port": self.broker.port, "reconnect_min": "100ms",
                     "reconnect_max": "1s", **self.mqtt_options},
            "devices": devices,
            "actuators": actuators,
            "rules": rules,
            "bridge": {"spool": spool,
                       "kafka": {"bootstrap": self.kafka.bootstrap, "mode": "exactly_once",
                                 "topics": self.topics, "backoff_initial": "200ms", "backoff_max": "2s",
                                 "send_timeout": "15s"}},
            "http": {"host": "127.0.0.1", "port": self.http_port},
            "log": {"level": "info", "format": "json"},
        }  # fmt: skip
        self.config_path.write_text(json.dumps(config, indent=1) + "\n")


# ---------------------------------------------------------------------- the gateway process
class GatewayProc:
    """``python -m gateway run --config FILE``; JSON logs appended to ``work/gateway.log``."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.log_path = run.work / "gateway.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.ready_times: list[float] = []
        self._offset = 0

    def start(self, *, wait: bool = True, timeout: float = 60.0) -> float:
        """Spawn; with ``wait``, return the seconds from spawn to the ``ready`` log line."""
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        for var in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM", "STATE_DIRECTORY"):
            env.pop(var, None)
        self._offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        began = time.monotonic()
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway", "run", "--config", str(self.run.config_path),
                 "--log-format", "json"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.run.work, env=env,
            )  # fmt: skip
        self.starts += 1
        if not wait:
            return 0.0
        self.wait_log("ready", timeout=timeout)
        took = time.monotonic() - began
        self.ready_times.append(took)
        return took

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def logs(self, since_start: bool = True) -> list[dict[str, Any]]:
        try:
            with self.log_path.open("rb") as handle:
                if since_start:
                    handle.seek(self._offset)
                data = handle.read()
        except OSError:
            return []
        out: list[dict[str, Any]] = []
        for line in data.splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict):
                    out.append(entry)
        return out

    def wait_log(self, event: str, *, timeout: float = 60.0, count: int = 1,
                 where: Callable[[dict[str, Any]], bool] | None = None) -> dict[str, Any]:  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self.logs() if str(e.get("event")) == event and (where is None or where(e))]
            if len(found) >= count:
                return found[count - 1]
            if not self.alive:
                raise ChaosError(f"the gateway exited ({self.exit_code}) before {event!r}:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise ChaosError(f"no {event!r} log line within {timeout:g} s:\n{self.tail()}")
            time.sleep(0.05)

    @property
    def exit_code(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def freeze(self, seconds: float) -> None:
        """SIGSTOP for ``seconds`` (a hung loop); the caller kills or continues it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGSTOP)
            time.sleep(seconds)

    def terminate(self, timeout: float = 30.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return int(self.proc.returncode)

    def tail(self, lines: int = 25) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class ChaosError(RuntimeError):
    """A scenario could not run (a process did not start, a broker did not come back)."""


# ---------------------------------------------------------------------- the publisher
class _AckedPublisher(threading.Thread):
    """A QoS 1 publisher thread that notes when the broker PUBACKed each message (``acked_at``:
    seq -> monotonic time, to about 50 ms). Subclasses pace the messages in :meth:`publish_all`."""

    def __init__(self, broker: Mosquitto, name: str) -> None:
        super().__init__(daemon=True, name=name)
        self.broker = broker
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{name}-{uuid.uuid4().hex[:8]}")
        self.client.max_queued_messages_set(20_000)
        self.client.max_inflight_messages_set(1000)
        self.client.reconnect_delay_set(1, 2)
        self.connected = threading.Event()
        self.client.on_connect = lambda *_a: self.connected.set()
        self.client.on_disconnect = self._on_disconnect
        self.sent = 0
        self.acked_at: dict[int, float] = {}
        self.disconnects = 0
        self.inflight_at_disconnect: set[int] = set()
        self.halt = threading.Event()
        self.done = threading.Event()
        self._pending: deque[tuple[int, mqtt.MQTTMessageInfo]] = deque()
        self._lock = threading.Lock()
        self._last_sweep = 0.0

    def _on_disconnect(self, *_args: object) -> None:
        self.connected.clear()
        self.disconnects += 1
        with self._lock:
            self.inflight_at_disconnect.update(seq for seq, _ in self._pending)

    def publish_all(self) -> None:
        raise NotImplementedError

    def run(self) -> None:
        client = self.client
        client.connect(self.broker.host, self.broker.port, keepalive=10)
        sock = client.socket()
        if isinstance(sock, socket.socket):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.loop_start()
        self.connected.wait(15)
        self._last_sweep = time.monotonic()
        try:
            self.publish_all()
            deadline = time.monotonic() + 120
            while self._pending and time.monotonic() < deadline and not self.halt.is_set():
                self.sweep(full=True)
                time.sleep(0.05)
        finally:
            self.sweep(full=True)
            client.disconnect()
            client.loop_stop()
            self.done.set()

    def publish(self, seq: int, topic: str, body: bytes) -> None:
        """Publish message ``seq``, backing off while paho's queue is full."""
        pause = 0.001
        while True:
            info = self.client.publish(topic, body, qos=1)
            if info.rc != MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
                break
            time.sleep(pause)
            pause = min(pause * 2, 0.05)
            self.sweep()
        with self._lock:
            self._pending.append((seq, info))
        self.sent = seq + 1
        if time.monotonic() - self._last_sweep > 0.05:
            self._last_sweep = time.monotonic()
            self.sweep()

    def sweep(self, *, full: bool = False) -> None:
        """Stamp the messages PUBACKed since the last sweep (to about 50 ms): those at the head
        of the line, and behind an unacked one too when ``full``, disconnected or far behind."""
        now = time.monotonic()
        with self._lock:
            pending = self._pending
            while pending and _acked(pending[0][1]):
                self.acked_at[pending.popleft()[0]] = now
            if full or len(pending) > 2000 or not self.connected.is_set():
                keep: deque[tuple[int, mqtt.MQTTMessageInfo]] = deque()
                for seq, info in pending:
                    if _acked(info):
                        self.acked_at[seq] = now
                    else:
                        keep.append((seq, info))
                self._pending = keep

    @property
    def acked(self) -> int:
        return len(self.acked_at)


class Publisher(_AckedPublisher):
    """QoS 1 publisher of ``count`` messages at ``rate``/s; notes when each one was PUBACKed."""

    def __init__(self, run: Run, count: int, rate: float) -> None:
        super().__init__(run.broker, "chaos-pub")
        self.run_ = run
        self.count = count
        self.rate = rate
        self.pace: threading.Event | None = None
        """When set by the caller before start: publish only what :meth:`release` allowed."""
        self.released = 0

    def publish_all(self) -> None:
        devices = self.run_.devices
        prefix = self.run_.mqtt_prefix
        began = time.monotonic()
        for seq in range(self.count):
            if self.halt.is_set():
                break
            while self.pace is not None and seq >= self.released and not self.halt.is_set():
                self.pace.wait(0.05)
                self.sweep()
            wait = began + seq / self.rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self.publish(seq, f"{prefix}/{_device(seq, devices)}", payload(seq, devices))

    def release(self, n: int) -> None:
        self.released += n
        if self.pace is not None:
            self.pace.set()
            self.pace.clear()

    def acked_identities(self) -> dict[Identity, float]:
        with self._lock:
            acked = dict(self.acked_at)
        out: dict[Identity, float] = {}
        for seq, at in acked.items():
            for ident in identities(seq, self.run_.devices):
                out[ident] = at
        return out


def _acked(info: mqtt.MQTTMessageInfo) -> bool:
    """PUBACK received. (``is_published()`` raises for a message queued while disconnected,
    which paho still sends, and marks published, after the reconnect.)"""
    return bool(info._published)


# ---------------------------------------------------------------------- Kafka, read_committed
class KafkaWatch(threading.Thread):
    """A read_committed consumer of the readings topic for the whole scenario."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(daemon=True, name="chaos-kafka-watch")
        self.consumer = Consumer({
            "bootstrap.servers": bootstrap, "group.id": f"chaos-{uuid.uuid4().hex[:8]}",
            "isolation.level": "read_committed", "enable.auto.commit": False,
            "logger": _quiet_logger(),
        })  # fmt: skip
        self.consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        self.counts: Counter[Identity] = Counter()
        self.first_seen: dict[Identity, float] = {}
        self.ce_ids: Counter[str] = Counter()
        self.records = 0
        self.foreign = 0
        self.last_new = time.monotonic()
        self.halt = threading.Event()
        self._lock = threading.Lock()

    def run(self) -> None:
        try:
            while not self.halt.is_set():
                try:
                    batch = self.consumer.consume(5000, 0.2)
                except KafkaException:
                    time.sleep(0.2)
                    continue
                now = time.monotonic()
                with self._lock:
                    for msg in batch:
                        if msg.error() is not None:
                            continue
                        self.records += 1
                        ce_id = dict(msg.headers() or []).get("ce_id") or b""
                        self.ce_ids[ce_id.decode() if isinstance(ce_id, bytes) else str(ce_id)] += 1
                        data = json.loads(msg.value() or b"{}")
                        ident = _identity(data)
                        if ident is None:
                            self.foreign += 1
                            continue
                        self.counts[ident] += 1
                        if ident not in self.first_seen:
                            self.first_seen[ident] = now
                            self.last_new = now
        finally:
            with contextlib.suppress(KafkaException, RuntimeError):
                self.consumer.close()

    def have(self, wanted: set[Identity] | dict[Identity, float]) -> int:
        with self._lock:
            return sum(1 for i in wanted if i in self.first_seen)

    def stop(self) -> None:
        self.halt.set()
        self.join(15)


def _identity(data: dict[str, Any]) -> Identity | None:
    device, metric, value = data.get("device_id"), data.get("metric"), data.get("value")
    if not isinstance(device, str) or not isinstance(value, int | float):
        return None
    if metric == "seq":
        return device, "seq", int(value)
    if metric == "temperature":
        return device, "temperature", _seq_of_temperature(float(value))
    return None


def _quiet_logger() -> Any:
    import logging  # noqa: PLC0415

    log = logging.getLogger("edgegw.chaos.librdkafka")
    log.addHandler(logging.NullHandler())
    log.propagate = False
    return log


# ---------------------------------------------------------------------- results
@dataclass
class ChaosResult:
    scenario: str
    params: str
    published: int = 0
    acked_messages: int = 0
    acked: int = 0
    """Readings in acknowledged messages (the identities that must be in Kafka)."""
    in_kafka: int = 0
    """Distinct acknowledged identities found in Kafka."""
    extra: int = 0
    """Identities in Kafka whose message was sent but whose PUBACK never came (allowed)."""
    lost: int = 0
    duplicated: int = 0
    resent: int = 0
    """Of ``duplicated``: second copies of readings the publisher had in flight when its own
    connection to the broker dropped. QoS 1 lets it send them again (with DUP), and the
    broker forwards that copy as a new message: at least once on the sensor's leg, which
    no subscriber can tell from a new reading (docs/chaos.md)."""
    dup_ce_ids: int = 0
    dropped: int = 0
    """Rows the spool's overflow policy dropped and counted (disk full): not lost."""
    recovery: list[float] = field(default_factory=list)
    ready: list[float] = field(default_factory=list)
    faults: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    lost_examples: list[Identity] = field(default_factory=list)
    dup_examples: list[Identity] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.duplicated == self.resent and self.dup_ce_ids == 0

    def recovery_text(self) -> str:
        if not self.recovery:
            return "-"
        if len(self.recovery) == 1:
            return f"{self.recovery[0]:.1f} s"
        return f"median {statistics.median(self.recovery):.1f} s, max {max(self.recovery):.1f} s"

    def summary(self) -> str:
        return (f"{self.scenario} ({self.params}): acked {self.acked_messages:,} msgs = "
                f"{self.acked:,} readings, "
                f"in Kafka {self.in_kafka:,}, LOST {self.lost}, DUPLICATED {self.duplicated} "
                f"(resent by the publisher {self.resent}; ce_id dups {self.dup_ce_ids}), "
                f"dropped by policy {self.dropped}, "
                f"recovery {self.recovery_text()}")  # fmt: skip


def settle(watch: KafkaWatch, wanted: dict[Identity, float], *, timeout: float, quiet: float = 30.0) -> None:
    """Wait until Kafka has every wanted identity (or nothing new came for ``quiet`` s), then 2 s more."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if watch.have(wanted) >= len(wanted):
            break
        if time.monotonic() - watch.last_new > quiet:
            break
        time.sleep(0.25)
    time.sleep(2.0)


def tally(result: ChaosResult, pub: Publisher, watch: KafkaWatch, fault_ends: list[float],
          dropped: int = 0) -> ChaosResult:  # fmt: skip
    """Fill in the counts and recovery times from the publisher's acks and Kafka's contents."""
    wanted = pub.acked_identities()
    with watch._lock:
        counts = Counter(watch.counts)
        first = dict(watch.first_seen)
        ce_ids = Counter(watch.ce_ids)
    result.published = pub.sent
    result.acked_messages = pub.acked
    result.acked = len(wanted)
    missing = [i for i in wanted if i not in counts]
    result.in_kafka = len(wanted) - len(missing)
    result.extra = sum(1 for i in counts if i not in wanted)
    result.dropped = dropped
    result.lost = max(0, len(missing) - dropped)
    if dropped and len(missing) < dropped:
        result.notes.append(f"{dropped - len(missing)} rows counted as dropped are not missing "
                            "(drops of rows whose readings also came again, or of unacked messages)")
    dups = {i: n for i, n in counts.items() if n > 1}
    result.duplicated = sum(n - 1 for n in dups.values())
    result.dup_ce_ids = sum(n - 1 for n in ce_ids.values() if n > 1)
    result.lost_examples = sorted(missing)[:10]
    result.dup_examples = sorted(dups)[:10]
    if missing:
        by_metric = Counter(i[1] for i in missing)
        text = ", ".join(f"{m} {n}" for m, n in sorted(by_metric.items()))
        result.notes.append(f"missing by metric: {text}")
    if pub.inflight_at_disconnect and dups:
        resent = [i for i in dups if i[2] in pub.inflight_at_disconnect]
        result.resent = sum(dups[i] - 1 for i in resent)
        if resent:
            result.notes.append(f"{len(resent)} duplicated identities were in flight from the publisher when "
                                "its connection dropped (QoS 1 resend with DUP)")
    for end in fault_ends:
        before = [first[i] for i, at in wanted.items() if at <= end and i in first]
        if before:
            result.recovery.append(max(0.0, max(before) - end))
    return result


# ---------------------------------------------------------------------- scenarios
@contextlib.contextmanager
def _running(run: Run, count: int, rate: float) -> Iterator[tuple[GatewayProc, Publisher, KafkaWatch]]:
    watch = KafkaWatch(run.kafka.bootstrap, run.topics["readings"])
    watch.start()
    gateway = GatewayProc(run)
    pub = Publisher(run, count, rate)
    try:
        yield gateway, pub, watch
    finally:
        pub.halt.set()  # a no-op after a normal finish; ends the publisher after an error
        gateway.kill()
        watch.stop()


def _sleep_until(moment: float) -> None:
    """Sleep until ``time.monotonic()`` reaches ``moment`` (at once if it has)."""
    delay = moment - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def _finish(result: ChaosResult, gateway: GatewayProc, pub: Publisher, watch: KafkaWatch,
            fault_ends: list[float], began: float, *, dropped: int = 0,
            drain: float = 1800.0) -> ChaosResult:  # fmt: skip
    pub.join(1800)  # the broker may take long to acknowledge while it holds a big backlog
    if pub.is_alive():
        pub.halt.set()
        pub.join(60)
        result.notes.append("the publisher was stopped before it had sent everything")
    settle(watch, pub.acked_identities(), timeout=drain)
    code = gateway.terminate()
    if code != 0:
        result.notes.append(f"the gateway's final SIGTERM exit code was {code}")
    result.ready = list(gateway.ready_times)
    result.seconds = time.monotonic() - began
    return tally(result, pub, watch, fault_ends, dropped)


def scenario_sigkill(run: Run, *, readings: int, kills: int, rate: float, seed: int = 7,
                     window: float | None = None, stall: float = 0.0) -> ChaosResult:  # fmt: skip
    """(a) ``kills`` SIGKILLs of the gateway at random moments while ``readings`` messages are published.

    The kills fall in the first ``window`` seconds (default: the publishing time). With
    ``stall``, each kill comes after the gateway was frozen (SIGSTOP) that long, as when
    systemd's watchdog kills a gateway whose loop hung: the broker's in-flight window then
    sits unread in the socket, and comes again with DUP set after the restart.
    """
    window = window or readings / rate
    how = f"SIGSTOP {stall:g} s + SIGKILL" if stall else "SIGKILLs"
    result = ChaosResult("sigkill-stalled" if stall else "sigkill",
                         f"{kills} {how} in {window:g} s, {readings:,} messages at {rate:g}/s",
                         faults=kills)  # fmt: skip
    rng = random.Random(seed)
    moments = sorted(rng.uniform(0.5, window) for _ in range(kills))
    began = time.monotonic()
    ends: list[float] = []
    with _running(run, readings, rate) as (gateway, pub, watch):
        gateway.start()
        t0 = time.monotonic()
        pub.start()
        for at in moments:
            # each incarnation lives at least until READY plus a little: a kill during start-up
            # is still a kill at a random moment of the process's life
            _sleep_until(t0 + at)
            if stall:
                gateway.freeze(stall)
            gateway.kill()
            ends.append(time.monotonic())
            gateway.start()
        return _finish(result, gateway, pub, watch, ends, began)


def scenario_hung_kill(run: Run, *, messages: int = 100, kills: int = 3) -> ChaosResult:
    """A hung gateway killed (as systemd's watchdog does), deterministically, ``kills`` times.

    Each round: the gateway is idle (everything acknowledged), it freezes (SIGSTOP), the
    publisher sends ``messages`` messages (the broker acknowledges them and delivers them
    into the frozen gateway's socket, unread), the gateway is killed and restarted: the
    broker sends those messages again with DUP set, and none of them was ever committed.
    """
    result = ChaosResult("hung-kill", f"{kills} x (SIGSTOP, {messages} msgs, SIGKILL)", faults=kills)
    began = time.monotonic()
    ends: list[float] = []
    total = messages * kills
    with _running(run, total, 1_000_000.0) as (gateway, pub, watch):
        gateway.start()
        pub.pace = threading.Event()
        pub.start()
        for _ in range(kills):
            time.sleep(1.0)  # idle: the in-flight window is empty
            gateway.freeze(0.0)
            pub.release(messages)
            deadline = time.monotonic() + 30
            while pub.acked < pub.sent or pub.sent < pub.released:
                if time.monotonic() > deadline:
                    raise ChaosError("the broker did not acknowledge the burst")
                time.sleep(0.05)
            time.sleep(0.5)  # delivered into the frozen gateway's socket
            gateway.kill()
            ends.append(time.monotonic())
            gateway.start()
        return _finish(result, gateway, pub, watch, ends, began)


def scenario_kafka_outage(run: Run, node: KafkaNode, *, readings: int, rate: float, outage: float,
                          start_after: float = 3.0) -> ChaosResult:  # fmt: skip
    """(b) Kafka stopped for ``outage`` seconds while readings flow, then started again."""
    result = ChaosResult("kafka-outage", f"{outage:g} s outage, {readings:,} messages at {rate:g}/s",
                         faults=1)
    began = time.monotonic()
    with _running(run, readings, rate) as (gateway, pub, watch):
        gateway.start()
        pub.start()
        time.sleep(start_after)
        node.stop()
        stopped = time.monotonic()
        time.sleep(max(0.0, outage - (time.monotonic() - stopped)))
        node.start(timeout=180)
        back = time.monotonic()
        result.notes.append(f"Kafka was away {back - stopped:.1f} s (start included)")
        if not gateway.alive:
            result.notes.append("the gateway died during the outage")
        return _finish(result, gateway, pub, watch, [back], began)


def scenario_broker_restart(run: Run, *, readings: int, rate: float, restarts: int = 1, kill: bool = False,
                            seed: int = 3) -> ChaosResult:  # fmt: skip
    """(c) Mosquitto restarted (clean, or kill -9) mid-run, ``restarts`` times."""
    how = "kill -9" if kill else "clean"
    result = ChaosResult(f"mosquitto-restart-{'kill' if kill else 'clean'}",
                         f"{restarts} x {how}, {readings:,} messages at {rate:g}/s",
                         faults=restarts)  # fmt: skip
    if kill:
        result.notes.append(f"Mosquitto autosave_interval {run.broker.autosave_interval_s} s: a kill -9 of "
                            "the "
                            "broker may lose what it acknowledged in the last interval (broker durability, "
                            "not the gateway's)")  # fmt: skip
    rng = random.Random(seed)
    window = readings / rate
    moments = sorted(rng.uniform(window * 0.15, window * 0.85) for _ in range(restarts))
    began = time.monotonic()
    ends: list[float] = []
    with _running(run, readings, rate) as (gateway, pub, watch):
        gateway.start()
        t0 = time.monotonic()
        pub.start()
        for at in moments:
            _sleep_until(t0 + at)
            run.broker.restart(kill=kill)
            ends.append(time.monotonic())
        return _finish(result, gateway, pub, watch, ends, began)


def scenario_leader_failover(run: Run, cluster: KafkaCluster, *, readings: int, rate: float,
                             kill_after: float = 5.0) -> ChaosResult:  # fmt: skip
    """(e) the readings partition's leader killed (kill -9) mid-run on a three-node cluster."""
    result = ChaosResult("leader-failover", f"3 nodes, leader kill -9, {readings:,} messages at {rate:g}/s",
                         faults=1)  # fmt: skip
    began = time.monotonic()
    with _running(run, readings, rate) as (gateway, pub, watch):
        gateway.start()
        pub.start()
        time.sleep(kill_after)
        leader = cluster.leader_of(run.topics["readings"])
        cluster.node(leader).kill()
        killed = time.monotonic()
        result.notes.append(f"killed node {leader}, the leader of {run.topics['readings']}/0")
        out = _finish(result, gateway, pub, watch, [killed], began)
        with contextlib.suppress(KafkaException, Exception):
            out.notes.append(f"new leader: node {cluster.leader_of(run.topics['readings'])}")
        return out


def _tmpfs(mount: Path, size: str) -> None:
    mount.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
                          capture_output=True, text=True, check=False)  # fmt: skip
    if done.returncode != 0:
        raise ChaosError(f"cannot mount a tmpfs at {mount} (needs root): {done.stderr.strip()}")


def scenario_disk_full(work: Path, broker: Mosquitto, node: KafkaNode, *, rate: float, fill: float,
                       size: str = "16m", grown: str = "128m",
                       wal_pages: int = 256) -> ChaosResult:  # fmt: skip
    """(d) The spool on a small tmpfs; Kafka stopped; the tmpfs fills; then room and Kafka come back."""
    mount = work / "spool-tmpfs"
    _tmpfs(mount, size)
    try:
        run = Run(work, broker, node, spool_path=mount / "spool.db",
                  spool_options={"wal_autocheckpoint": wal_pages})
        readings = int(rate * (fill + 60))
        result = ChaosResult("disk-full", f"spool on a {size} tmpfs (wal_autocheckpoint {wal_pages}), "
                             f"Kafka away {fill:g}s+, {rate:g} msg/s",
                             faults=1)  # fmt: skip
        began = time.monotonic()
        with _running(run, readings, rate) as (gateway, pub, watch):
            gateway.start()
            pub.start()
            time.sleep(2.0)
            node.stop()
            t_stop = time.monotonic()
            full_at = None
            while time.monotonic() - t_stop < fill + 120:
                if full_at is None and any(e.get("event") == "spool: storage full, dropping by policy"
                                           for e in gateway.logs()):  # fmt: skip
                    full_at = time.monotonic()
                now = time.monotonic()
                if full_at is not None and now - t_stop >= fill and now - full_at > 5:
                    break
                if not gateway.alive:
                    break
                time.sleep(0.5)
            result.notes.append("the spool filesystem filled up" if full_at else "the spool never filled up")
            result.notes.append(f"gateway alive through the full disk: {gateway.alive}")
            subprocess.run(["mount", "-o", f"remount,size={grown}", str(mount)], check=True)
            node.start(timeout=180)
            back = time.monotonic()
            pub.join(600)
            settle(watch, pub.acked_identities(), timeout=1800)
            from bridge.status import read_status  # noqa: PLC0415

            status = read_status(run.spool)
            drops = {k: v for k, v in status.dropped.items() if k != "duplicate"}
            result.notes.append(f"spool drops by reason (its drops table): {drops or 'none'}; integrity "
                                f"{_integrity(run.spool)}; depth after drain {status.depth}")  # fmt: skip
            logged = _logged_incoming_drops(gateway)
            result.notes.append(f"readings the gateway logged as 'spool: incoming rows dropped' (disk full): "
                                f"{logged:,}")  # fmt: skip
            return _finish(result, gateway, pub, watch, [back], began, dropped=sum(drops.values()), drain=5)
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False, capture_output=True)


def _logged_incoming_drops(gateway: GatewayProc) -> int:
    return sum(int(e.get("rows", 0)) for e in gateway.logs(since_start=False)
               if e.get("event") == "spool: incoming rows dropped")  # fmt: skip


def _integrity(path: Path) -> str:
    import sqlite3  # noqa: PLC0415

    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


def _inq(fd: int) -> int:
    """Bytes in a tty's input queue not read yet (FIONREAD on the slave side)."""
    buf = fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0")
    return int(struct.unpack("i", buf)[0])


def scenario_serial_unplug(work: Path, broker: Mosquitto, node: KafkaEndpoint, *, cycles: int,
                           plugged: float = 1.0, unplugged: float = 0.5,
                           rate: float = 200.0) -> ChaosResult:  # fmt: skip
    """(f) A UART device (a pty behind a symlink) unplugged and replugged ``cycles`` times.

    What a UART can promise, and what is checked: the device writes lines ``seq=N`` only
    while the gateway has the port open (it waits for the gateway's ``serial port open``
    log line after each replug: like a device that talks once the host opens the port;
    pyserial flushes the input queue at open, as a real host does, so bytes sent before
    are gone on any UART). At each unplug, the bytes still in the tty's input queue
    (``FIONREAD``) were never read by the gateway: they are lost with the cable, as in a
    real USB-serial adapter's FIFO, and are reported as ``in the UART at unplug``, not as
    lost. Every line whose last byte the gateway had read before the unplug must be in
    Kafka exactly once.
    """
    link = work / "dev" / "serial-by-id-chaos"
    run = Run(work, broker, node, devices=RULE_DEVICES, serial_port=str(link))
    result = ChaosResult("serial-unplug", f"{cycles} unplug/replug cycles, {rate:g} lines/s while plugged",
                         faults=cycles)  # fmt: skip
    device = PtyDevice(link)
    device.plug()
    watch = KafkaWatch(node.bootstrap, run.topics["readings"])
    watch.start()
    gateway = GatewayProc(run)
    began = time.monotonic()
    guaranteed: dict[Identity, float] = {}
    unread_lines = 0
    seq = 0
    try:
        gateway.start()
        plugged_at = time.monotonic()
        for cycle in range(cycles + 1):
            gateway.wait_log("serial port open", where=_opens(cycle + 1), timeout=30)
            if cycle:
                result.recovery.append(time.monotonic() - plugged_at)
            if cycle == cycles:
                break
            written: list[tuple[int, int]] = []  # (seq, end offset in the byte stream)
            offset = 0
            t_end = time.monotonic() + plugged
            while time.monotonic() < t_end:
                line = b"seq=%d\n" % seq
                if device.write(line) != len(line):
                    raise ChaosError("the pty did not take a line: the gateway is not reading")
                offset += len(line)
                written.append((seq, offset))
                seq += 1
                time.sleep(1.0 / rate)
            assert device._slave is not None
            read_upto = offset - _inq(device._slave)
            device.unplug()
            now = time.monotonic()
            for s, end in written:
                if end <= read_upto:
                    guaranteed[("uart", "seq", s)] = now
                else:
                    unread_lines += 1
            time.sleep(unplugged)
            device.plug()
            plugged_at = time.monotonic()
        settle(watch, guaranteed, timeout=120)
        with watch._lock:
            counts = Counter(watch.counts)
            ce_ids = Counter(watch.ce_ids)
        uart = {i: n for i, n in counts.items() if i[0] == "uart"}
        missing = [i for i in guaranteed if i not in uart]
        result.published = seq
        result.acked_messages = len(guaranteed)
        result.acked = len(guaranteed)
        result.in_kafka = len(guaranteed) - len(missing)
        result.extra = sum(1 for i in uart if i not in guaranteed)
        result.lost = len(missing)
        result.lost_examples = sorted(missing)[:10]
        result.duplicated = sum(n - 1 for n in uart.values() if n > 1)
        result.dup_ce_ids = sum(n - 1 for n in ce_ids.values() if n > 1)
        result.notes.append(f"{seq:,} lines written; {unread_lines} were still in the UART's input queue "
                            f"at an unplug (lost with the cable; {result.extra} of them were read after all)")
        result.notes.append("recovery here: from a replug until the gateway had the port open again "
                            f"(port lost to reopened, from its logs: median {_reopen_median(gateway):.2f} s)")
        code = gateway.terminate()
        if code != 0:
            result.notes.append(f"the gateway's final SIGTERM exit code was {code}")
        result.ready = list(gateway.ready_times)
        result.seconds = time.monotonic() - began
        return result
    finally:
        gateway.kill()
        watch.stop()
        device.close()


def _opens(n: int) -> Callable[[dict[str, Any]], bool]:
    return lambda entry: entry.get("opens") == n


def _reopen_median(gateway: GatewayProc) -> float:
    lost_at: list[float] = []
    opened_at: list[float] = []
    for entry in gateway.logs():
        ts = entry.get("timestamp")
        if not isinstance(ts, str):
            continue
        from datetime import datetime  # noqa: PLC0415

        t = datetime.fromisoformat(ts).timestamp()
        if entry.get("event") == "serial port lost":
            lost_at.append(t)
        elif entry.get("event") == "serial port open" and lost_at:
            opened_at.append(t - lost_at[-1])
    return statistics.median(opened_at) if opened_at else float("nan")


# ---------------------------------------------------------------------- rules under kills (issue 11)
@dataclass
class RuleRun(Run):
    """A run whose every device drives a rule that fires and clears on every other reading.

    Device ``dev-NN`` (``NN = seq % devices``) publishes ``{"seq": S, "t": V}``; its k-th
    message (``k = seq // devices``) has ``t`` above :attr:`threshold` when k is odd (60)
    and below it when k is even (40), so the rule ``hot-dev-NN`` (``t above threshold``)
    fires on every second reading and clears on the next one, setting the declared MQTT
    actuator ``dev-NN/heater`` to ``{"state": "on"}`` / ``{"state": "off"}``. ``t`` also
    encodes the sequence (``60 + S / 1e6``), so each ``t`` reading, and each rule event (its
    ``values`` hold the deciding ``t``), names the message it came from.
    """

    threshold: float = 50.0

    @staticmethod
    def device_of(seq: int, devices: int) -> str:
        return f"dev-{seq % devices:02d}"

    def device(self, seq: int) -> str:
        return self.device_of(seq, self.devices)

    def t_value(self, seq: int) -> float:
        high = (seq // self.devices) % 2 == 1
        return (self.threshold + 10.0 if high else self.threshold - 10.0) + seq / 1e6

    def seq_of_t(self, value: float) -> int:
        base = self.threshold + 10.0 if value > self.threshold else self.threshold - 10.0
        return round((value - base) * 1e6)

    def message(self, seq: int) -> tuple[str, bytes]:
        """``(MQTT topic, payload)`` of message ``seq``."""
        return f"{self.mqtt_prefix}/{self.device(seq)}", b'{"seq":%d,"t":%r}' % (seq, self.t_value(seq))

    def rule_device(self) -> dict[str, str]:
        """Rule id -> device id."""
        return {f"hot-dev-{i:02d}": f"dev-{i:02d}" for i in range(self.devices)}

    def actuator_topic(self, device: str) -> str:
        return f"{self.mqtt_prefix}/act/{device}/heater"

    def write_config(self) -> None:
        ids = [f"dev-{i:02d}" for i in range(self.devices)]
        devices = [{"id": d, "topic": f"{self.mqtt_prefix}/{d}", "profile": "json",
                    "fields": {"seq": {"metric": "seq", "type": "number"},
                               "t": {"metric": "t", "type": "number"}}}
                   for d in ids]  # fmt: skip
        actuators = [{"id": f"{d}/heater", "profile": "json", "topic": self.actuator_topic(d)} for d in ids]
        rules = [{"id": f"hot-{d}", "when": {"sensor": f"{d}/t", "above": self.threshold},
                  "then": [{"set": f"{d}/heater", "to": {"state": "on"}}],
                  "else": [{"set": f"{d}/heater", "to": {"state": "off"}}],
                  "max_fires_per_minute": 1_000_000}
                 for d in ids]  # fmt: skip
        config = {
            "gateway": {"id": self.name, "state_dir": str(self.state)},
            "mqtt": {"host": self.broker.host, "port": self.broker.port, "reconnect_min": "100ms",
                     "reconnect_max": "1s", **self.mqtt_options},
            "devices": devices,
            "actuators": actuators,
            "rules": rules,
            "bridge": {"spool": {"path": str(self.spool), **self.spool_options},
                       "kafka": {"bootstrap": self.kafka.bootstrap, "mode": "exactly_once",
                                 "topics": self.topics, "backoff_initial": "200ms", "backoff_max": "2s",
                                 "send_timeout": "15s"}},
            "http": {"host": "127.0.0.1", "port": self.http_port},
            "log": {"level": "info", "format": "json"},
        }  # fmt: skip
        self.config_path.write_text(json.dumps(config, indent=1) + "\n")


class StreamPublisher(_AckedPublisher):
    """QoS 1 publisher of messages ``0 .. count-1`` (``message(seq) -> (topic, payload)``) at ``rate``/s.

    It publishes only below a limit the caller moves up with :meth:`allow` (all of them by
    default); after waiting at the limit it goes on at ``rate`` again, not in a burst.
    ``acked_at`` holds the messages the broker PUBACKed (seq -> monotonic time, to ~50 ms).
    """

    def __init__(self, broker: Mosquitto, message: Callable[[int], tuple[str, bytes]], count: int,
                 rate: float, *, limit: int | None = None) -> None:  # fmt: skip
        super().__init__(broker, "chaos-spub")
        self.message = message
        self.count = count
        self.rate = rate
        self._limit = count if limit is None else limit
        self._cond = threading.Condition()

    def allow(self, limit: int) -> None:
        """Let the publisher go on up to (not including) message ``limit``."""
        with self._cond:
            self._limit = min(self.count, max(self._limit, limit))
            self._cond.notify_all()

    @property
    def limit(self) -> int:
        return self._limit

    def publish_all(self) -> None:
        base_t, base_seq = time.monotonic(), 0
        for seq in range(self.count):
            if self.halt.is_set():
                break
            if seq >= self._limit:
                with self._cond:
                    while seq >= self._limit and not self.halt.is_set():
                        self._cond.wait(0.05)
                        self.sweep()
                base_t, base_seq = time.monotonic(), seq
            wait = base_t + (seq - base_seq) / self.rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self.publish(seq, *self.message(seq))

    def acked_seqs(self) -> set[int]:
        self.sweep(full=True)
        with self._lock:
            return set(self.acked_at)


class MqttWatch:
    """Counts the messages on an MQTT topic filter (QoS 1), e.g. what actuators receive."""

    def __init__(self, broker: Mosquitto, topic_filter: str) -> None:
        client_id = f"chaos-watch-{uuid.uuid4().hex[:8]}"
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        self.topic_filter = topic_filter
        self.subscribed = threading.Event()
        self.times: list[float] = []
        self.messages: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self.client.on_connect = lambda client, *_a: client.subscribe(topic_filter, qos=1)
        self.client.on_subscribe = lambda *_a: self.subscribed.set()
        self.client.on_message = self._on_message
        self.broker = broker

    def _on_message(self, _client: object, _userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.times.append(time.monotonic())
            self.messages.append((msg.topic, bytes(msg.payload)))

    def start(self, timeout: float = 15.0) -> None:
        self.client.connect(self.broker.host, self.broker.port, keepalive=10)
        self.client.loop_start()
        if not self.subscribed.wait(timeout):
            raise ChaosError(f"no SUBACK for {self.topic_filter} within {timeout:g} s")

    def count_between(self, start: float, end: float) -> int:
        with self._lock:
            return sum(1 for t in self.times if start <= t <= end)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass(frozen=True)
class TopicRecord:
    """One record as a read_committed consumer saw it."""

    partition: int
    offset: int
    key: bytes
    value: bytes
    headers: dict[str, bytes]


def read_committed(bootstrap: str, topic: str, *, timeout: float = 60.0) -> list[TopicRecord]:
    """Every committed record of ``topic`` (all partitions, from the beginning, to the end).

    Meant for a topic nobody writes to any more (the gateway stopped): it reads with
    ``isolation.level=read_committed`` until each partition reports its end.
    """
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": f"chaos-read-{uuid.uuid4().hex[:8]}",
        "isolation.level": "read_committed", "enable.auto.commit": False,
        "enable.partition.eof": True, "logger": _quiet_logger(),
    })  # fmt: skip
    try:
        meta = consumer.list_topics(topic, timeout=15)
        partitions = sorted(meta.topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        at_end: set[int] = set()
        out: list[TopicRecord] = []
        deadline = time.monotonic() + timeout
        while len(at_end) < len(partitions):
            if time.monotonic() > deadline:
                left = sorted(set(partitions) - at_end)
                raise ChaosError(f"{topic}: partitions {left} did not reach their end within {timeout:g} s "
                                 f"({len(out)} records read)")  # fmt: skip
            for msg in consumer.consume(5000, 0.5):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        at_end.add(int(msg.partition() or 0))
                        continue
                    raise ChaosError(f"{topic}: {err}")
                at_end.discard(int(msg.partition() or 0))
                headers: dict[str, bytes] = {}
                for name, raw in dict(msg.headers() or []).items():
                    headers[str(name)] = raw if isinstance(raw, bytes) else str(raw or "").encode()
                out.append(TopicRecord(int(msg.partition() or 0), int(msg.offset() or 0), msg.key() or b"",
                                       msg.value() or b"", headers))  # fmt: skip
        return out
    finally:
        with contextlib.suppress(KafkaException, RuntimeError):
            consumer.close()


# ---------------------------------------------------------------------- power cuts (issue 17)
UNCLEAN_START = "unclean start"
"""How the gateway's log line after an unclean stop begins (gateway/runtime.py)."""
LOSS_REPORTS = ("acknowledged rows lost at the last stop", "nothing acknowledged was lost at the last stop")
"""The log lines that give the loss of an unclean stop, once it is known (after Kafka's
checkpoint was read, when there is an uplink): ``lost_at_least`` in the first."""
REBASED = "spool: it came back older than Kafka's checkpoint"


@dataclass
class PowerCutRun(RuleRun):
    """A :class:`RuleRun` whose whole state directory is ``state_dir`` (e.g. on a PowerCutFS mount).

    The spool, the run marker and the gateway id all live there: the config names no
    ``gateway.id``, so ``edgegw run`` derives one at its first start and keeps it in the
    state directory, as on a Pi. With ``with_rules=False`` the config has no rules and no
    actuators: every spool row is then a reading (2 per message: ``seq`` and ``t``).
    """

    state_dir: Path | None = None
    with_rules: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.state_dir is not None:
            self.state = self.state_dir
            self.write_config()

    def write_config(self) -> None:
        super().write_config()
        config = json.loads(self.config_path.read_text())
        config["gateway"].pop("id", None)
        if not self.with_rules:
            config.pop("rules", None)
            config.pop("actuators", None)
        self.config_path.write_text(json.dumps(config, indent=1) + "\n")


def power_cut(gateway: GatewayProc, fs: PowerCutFS) -> PowerCutStats:
    """Cut the power under a running gateway: SIGKILL, then drop the unsynced writes, then power back.

    The order: at a real cut the CPU and the SD card stop at the same instant. Killing first
    (and reaping) stops the gateway where it stands; the cut that follows drops exactly what
    it had not synced at that instant. Cutting first would let the gateway run on for a
    moment against a dead disk (EIO everywhere, its error paths, what it still sends to the
    broker and to Kafka meanwhile), which no real cut allows. Returns what the cut dropped.
    """
    gateway.kill()
    dropped = fs.cut()
    fs.restore()
    return dropped


def scrape_metrics(port: int, *, timeout: float = 10.0) -> dict[str, float]:
    """``/metrics`` as ``{"name{labels}": value}`` (comments skipped)."""
    import urllib.request  # noqa: PLC0415

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        with contextlib.suppress(ValueError):
            out[name] = float(value)
    return out


def _log_entries(path: Path, start: int, end: int | None) -> list[dict[str, Any]]:
    try:
        with path.open("rb") as handle:
            handle.seek(start)
            data = handle.read() if end is None else handle.read(max(0, end - start))
    except OSError:
        return []
    out: list[dict[str, Any]] = []
    for line in data.splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict):
                out.append(entry)
    return out


@dataclass
class CutRecord:
    """One power cut of :func:`scenario_power_cuts` and the start that followed it."""

    index: int
    sent_at_cut: int
    """Messages published when the power went (the first ``sent_at_cut`` seqs)."""
    backlog: int
    """Messages published into the broker while the gateway was off."""
    cut_at: float
    dropped: PowerCutStats
    commands_in_life: int = 0
    commands_last_half_s: int = 0
    ready_s: float = 0.0
    """Spawn to READY of the restart after this cut."""
    unclean: dict[str, Any] | None = None
    """The ``unclean start`` log entry of that restart (None: none was logged)."""
    loss: dict[str, Any] | None = None
    """The loss report that followed it (see LOSS_REPORTS; None: none within the wait)."""
    metrics: dict[str, float] = field(default_factory=dict)
    """``edgegw_unclean_start`` and ``edgegw_rows_lost_at_unclean_start`` after that restart."""
    rebased: dict[str, Any] | None = None
    """The ``came back older than Kafka's checkpoint`` log entry of that life, if any."""
    probe_missing: list[int] = field(default_factory=list)
    """Of the messages that life took first (the backlog and ``probe`` more), those not in
    Kafka before the next cut (or the end)."""
    log_span: tuple[int, int | None] = (0, None)

    @property
    def lost_reported(self) -> int | None:
        if self.unclean is None or self.loss is None:
            return None
        return int(self.loss.get("lost_at_least", 0))


@dataclass
class PowerCutOutcome:
    cuts: list[CutRecord]
    acked: dict[int, float]
    """Messages the broker PUBACKed to the publisher: seq -> when (monotonic, to ~50 ms)."""
    sent: int
    final_exit: int
    seconds: float
    starts: int
    ready_times: list[float]
    log_path: Path

    def life_of(self, seq: int) -> int:
        """Which gateway life took message ``seq`` (0 = before the first cut): the one
        running when it was published, or the next one for a message published while the
        gateway was off. (A message in flight at a cut is taken again by the next life.)"""
        life = 0
        for cut in self.cuts:
            if seq >= cut.sent_at_cut:
                life = cut.index
        return life


def cut_points(rng: random.Random, cuts: int, messages: int, *, life_max: int,
               backlog_max: int) -> list[tuple[int, int]]:  # fmt: skip
    """``(cut once this many messages were sent, then let the publisher go this many further)``."""
    points: list[tuple[int, int]] = []
    held = 0
    for _ in range(cuts):
        at = held + rng.randint(life_max // 5, life_max)
        backlog = rng.randint(0, backlog_max)
        points.append((at, backlog))
        held = at + backlog
    if held >= messages - 200:
        raise ChaosError(f"the cuts do not all fall inside the stream ({held} of {messages} messages)")
    return points


def _not_in_kafka(watch: KafkaWatch, run: RuleRun, seqs: range) -> list[int]:
    with watch._lock:
        return [s for s in seqs if (run.device(s), "seq", s) not in watch.first_seen]


def _wait_in_kafka(watch: KafkaWatch, run: RuleRun, seqs: range, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := _not_in_kafka(watch, run, seqs)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


POWER_CUT_METRICS = ("edgegw_unclean_start", "edgegw_rows_lost_at_unclean_start")


def scenario_power_cuts(run: PowerCutRun, fs: PowerCutFS, *, messages: int, rate: float, cuts: int,
                        seed: int, life_max: int, backlog_max: int, probe: int = 0,
                        probe_timeout: float = 60.0, settle_timeout: float = 180.0,
                        quiet: float = 30.0) -> PowerCutOutcome:  # fmt: skip
    """``cuts`` power cuts (:func:`power_cut`) at seeded random points of a QoS 1 stream of
    ``messages`` :class:`RuleRun` messages at ``rate``/s, the gateway restarted after each.

    Each cut comes a random number of messages (``life_max / 5`` to ``life_max``) after the
    publisher resumed for that life, and, when the run has rules, only once commands of that
    life reached the actuators' topic (rules firing). While the gateway is off the publisher
    sends a random backlog (0 to ``backlog_max``) into the broker. With ``probe``, before
    each further cut the scenario waits (up to ``probe_timeout``) until Kafka holds what that
    life took first: the backlog and ``probe`` messages after it; what did not come is noted
    in :attr:`CutRecord.probe_missing`. After the stream: settle, SIGTERM. Asserts nothing.
    """
    began = time.monotonic()
    points = cut_points(random.Random(seed), cuts, messages, life_max=life_max, backlog_max=backlog_max)
    pub = StreamPublisher(run.broker, run.message, messages, rate, limit=points[0][0])
    watch = KafkaWatch(run.kafka.bootstrap, run.topics["readings"])
    actuators = MqttWatch(run.broker, f"{run.mqtt_prefix}/act/#")
    gateway = GatewayProc(run)
    records: list[CutRecord] = []
    spans: list[int] = []

    def firing(since: float) -> bool:
        return not run.with_rules or actuators.count_between(since, time.monotonic()) > 0

    def taken_first(rec: CutRecord) -> range:
        return range(rec.sent_at_cut, min(messages, rec.sent_at_cut + rec.backlog + probe))

    try:
        actuators.start()
        watch.start()
        life_began = time.monotonic()
        gateway.start()
        spans.append(gateway._offset)
        pub.start()
        for i, (at, backlog) in enumerate(points):
            if records and probe:  # what the last life took first must be in Kafka before this cut
                last = records[-1]
                pub.allow(taken_first(last).stop)
                last.probe_missing = _wait_in_kafka(watch, run, taken_first(last), probe_timeout)
            pub.allow(at + backlog)  # the stream goes on through the cut
            while pub.sent < at or not firing(life_began):
                if not gateway.alive:
                    raise ChaosError(f"the gateway died on its own before cut {i + 1}:\n{gateway.tail()}")
                if not pub.is_alive():
                    raise ChaosError("the publisher stopped")
                time.sleep(0.002)
            cut_at, sent = time.monotonic(), pub.sent
            dropped = power_cut(gateway, fs)
            rec = CutRecord(i + 1, sent, max(0, at + backlog - sent), cut_at, dropped,
                            commands_in_life=actuators.count_between(life_began, cut_at),
                            commands_last_half_s=actuators.count_between(max(life_began, cut_at - 0.5),
                                                                         cut_at))  # fmt: skip
            records.append(rec)
            deadline = time.monotonic() + 30  # the backlog goes into the broker while the gateway is off
            while pub.sent < min(at + backlog, messages) and time.monotonic() < deadline:
                time.sleep(0.01)
            life_began = time.monotonic()
            rec.ready_s = gateway.start()
            spans.append(gateway._offset)
            rec.unclean = next((e for e in gateway.logs()
                                if str(e.get("event", "")).startswith(UNCLEAN_START)), None)  # fmt: skip
            deadline = time.monotonic() + 15  # the loss is told once Kafka's checkpoint was read
            while rec.unclean is not None and rec.loss is None and time.monotonic() < deadline:
                rec.loss = next((e for e in gateway.logs()
                                 if str(e.get("event", "")).startswith(LOSS_REPORTS)), None)  # fmt: skip
                time.sleep(0.05)
            with contextlib.suppress(OSError):
                got = scrape_metrics(run.http_port)
                rec.metrics = {k: v for k, v in got.items() if k in POWER_CUT_METRICS}
        pub.allow(messages)
        pub.join(300)
        if pub.is_alive():
            raise ChaosError("the publisher did not finish")
        acked = dict(pub.acked_at)
        settle(watch, {(run.device(s), "seq", s): 0.0 for s in acked}, timeout=settle_timeout, quiet=quiet)
        if records and probe:
            records[-1].probe_missing = _not_in_kafka(watch, run, taken_first(records[-1]))
        code = gateway.terminate()
    finally:
        pub.halt.set()
        gateway.kill()
        watch.stop()
        actuators.stop()
    spans.append(-1)
    for n, rec in enumerate(records):
        start, end = spans[n + 1], spans[n + 2]
        rec.log_span = (start, None if end < 0 else end)
        rec.rebased = next((e for e in _log_entries(gateway.log_path, start, rec.log_span[1])
                            if str(e.get("event", "")).startswith(REBASED)), None)  # fmt: skip
    return PowerCutOutcome(records, acked, pub.sent, code, time.monotonic() - began, gateway.starts,
                           list(gateway.ready_times), gateway.log_path)  # fmt: skip
