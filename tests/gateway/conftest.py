"""Helpers of the gateway end-to-end tests.

- :class:`Gateway`: ``edgegw run --config FILE`` as a subprocess, its JSON log lines
  collected as they come, ``/metrics`` and ``/healthz`` over HTTP, signals;
- :class:`TopicWatch`: a plain paho subscriber on the actuators' command topics;
- :func:`read_kafka`: every committed record of some topics (``read_committed``);
- :func:`simulate` / :func:`expected_readings`: the demo fleet through ``edgegw simulate``
  and the readings per device that the messages it reports as sent carry.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition
from prometheus_client.parser import text_string_to_metric_families
from ruamel.yaml import YAML

from bridge.config import TopicsConfig
from gateway.demo import ACTUATORS as DEMO_ACTUATORS  # the actuators the demo rules name
from simulators.fleet import FleetSpec
from simulators.generator import FleetGenerator
from simulators.testbed import KafkaEndpoint, Mosquitto, free_port
from tests.bridge.conftest import make_topics

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo"
DEMO_FLEET = DEMO / "fleet.yaml"
DEMO_RULES = DEMO / "rules.yaml"

CE_HEADERS = ("ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time", "content-type")


# ---------------------------------------------------------------------- config
def kafka_topics(kafka: KafkaEndpoint, prefix: str) -> TopicsConfig:
    """Topics of this test only (the session Kafka is shared); the checkpoints topic is
    left to the broker's auto-creation, as in the bridge tests."""
    return make_topics(kafka, prefix)


def gateway_config(
    tmp_path: Path,
    mqtt_address: tuple[str, int],
    *,
    http_port: int,
    devices: list[dict[str, Any]] | None = None,
    actuators: list[dict[str, Any]] | None = None,
    rules: list[dict[str, Any]] | None = None,
    include: list[Path] | None = None,
    kafka: KafkaEndpoint | None = None,
    topics: TopicsConfig | None = None,
) -> dict[str, Any]:
    """An ``edgegw.yaml`` as plain data: a gateway id of its own, state in ``tmp_path``."""
    config: dict[str, Any] = {
        "gateway": {"id": f"e2e-{uuid.uuid4().hex[:10]}", "state_dir": str(tmp_path / "state")},
        "mqtt": {"host": mqtt_address[0], "port": mqtt_address[1]},
        "devices": devices if devices is not None else FleetSpec.load(DEMO_FLEET).gateway_devices(),
        "actuators": actuators if actuators is not None else DEMO_ACTUATORS,
        "http": {"host": "127.0.0.1", "port": http_port},
        "log": {"level": "info", "format": "json"},
    }
    if rules is not None:
        config["rules"] = rules
    if include is not None:
        config["include"] = [str(p) for p in include]
    if kafka is not None:
        assert topics is not None
        config["bridge"] = {
            "kafka": {
                "bootstrap": kafka.bootstrap,
                "topics": topics.model_dump(),
                "backoff_initial": "200ms",
                "backoff_max": "2s",
            }
        }
    return config


def write_config(path: Path, config: dict[str, Any]) -> Path:
    """Write (or rewrite, atomically: a reload must never read half a file) the YAML."""
    yaml = YAML()
    yaml.default_flow_style = False
    yaml.width = 4096  # one line per value, as a person writes it
    tmp = path.with_suffix(".tmp")
    with tmp.open("w") as handle:
        yaml.dump(config, handle)
    tmp.replace(path)
    return path


# ---------------------------------------------------------------------- the gateway process
class Gateway:
    """``python -m gateway run --config FILE`` with its logs collected line by line."""

    def __init__(self, config_path: Path, http_port: int, cwd: Path) -> None:
        self.config_path = config_path
        self.http_port = http_port
        self.cwd = cwd
        self.logs: list[dict[str, Any]] = []
        self.process: subprocess.Popen[str] | None = None
        self._cond = threading.Condition()
        self._reader: threading.Thread | None = None

    # -- life cycle
    def start(self, *, ready_within: float = 60.0) -> Gateway:
        """Start and wait for the ``ready`` log line (MQTT subscribed, spool open, rules loaded)."""
        mark = len(self.logs)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        for var in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM", "STATE_DIRECTORY"):
            env.pop(var, None)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "--config", str(self.config_path)],
            cwd=self.cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        self._reader = threading.Thread(target=self._read, args=(self.process,), daemon=True)
        self._reader.start()
        self.wait_log("ready", after=mark, timeout=ready_within)
        return self

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            try:
                entry = json.loads(line)
            except ValueError:
                entry = {"event": None, "raw": line.rstrip("\n")}
            if not isinstance(entry, dict):
                entry = {"event": None, "raw": line.rstrip("\n")}
            with self._cond:
                self.logs.append(entry)
                self._cond.notify_all()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def send(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def terminate(self, timeout: float = 30.0) -> tuple[int, float]:
        """SIGTERM; the exit code and the seconds it took to exit."""
        assert self.process is not None
        began = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=timeout)
        took = time.monotonic() - began
        self.close()
        return code, took

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.close()

    def close(self) -> None:
        """After the process ended: the rest of its log, and its pipe closed."""
        if self._reader is not None:
            self._reader.join(timeout=5)
        if self.process is not None and self.process.stdout is not None and not self._reader_alive():
            self.process.stdout.close()

    # -- logs
    def wait_log(self, event: str, *, after: int = 0, timeout: float = 30.0) -> dict[str, Any]:
        """The first log entry from index ``after`` on whose event starts with ``event``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for entry in self.logs[after:]:
                    if str(entry.get("event")).startswith(event):
                        return entry
                left = deadline - time.monotonic()
                if left <= 0 or (self.process is not None and self.process.poll() is not None
                                 and not self._reader_alive()):  # fmt: skip
                    raise AssertionError(f"no log event {event!r} within {timeout} s:\n{self.log_tail()}")
                self._cond.wait(min(left, 0.2))

    def _reader_alive(self) -> bool:
        return self._reader is not None and self._reader.is_alive()

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(json.dumps(e, default=str) for e in self.logs[-lines:])

    # -- HTTP
    def get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        url = f"http://127.0.0.1:{self.http_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:  # http to loopback
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def healthz(self) -> tuple[int, dict[str, Any]]:
        status, body = self.get("/healthz")
        return status, json.loads(body)

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """``{(sample name, sorted labels): value}`` from ``/metrics``."""
        status, body = self.get("/metrics")
        assert status == 200, body
        out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for family in text_string_to_metric_families(body.decode()):
            for sample in family.samples:
                out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return out

    def readings_seen(self) -> float:
        return sum(v for (name, _), v in self.metrics().items() if name == "edgegw_readings_total")


@pytest.fixture
def gateways(tmp_path: Path) -> Iterator[Callable[[Path, int], Gateway]]:
    """Make :class:`Gateway` handles; any still running at the end is killed and its log printed."""
    made: list[Gateway] = []

    def make(config_path: Path, http_port: int) -> Gateway:
        gateway = Gateway(config_path, http_port, tmp_path)
        made.append(gateway)
        return gateway

    yield make
    for gateway in made:
        gateway.kill()
        print(f"--- log of {gateway.config_path}\n{gateway.log_tail(60)}")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A Mosquitto of this test alone. The simulator's topics (``zigbee2mqtt/temp-01``...)
    are fixed and shared by every test that runs the demo fleet; a private broker keeps
    their queued and retained messages out of this test's exact counts."""
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def http_port() -> int:
    return free_port()


# ---------------------------------------------------------------------- actuator topics
@dataclass(frozen=True, slots=True)
class Seen:
    topic: str
    payload: bytes

    def json(self) -> Any:
        return json.loads(self.payload)


class TopicWatch:
    """A plain paho client subscribed (QoS 1) before the gateway starts."""

    def __init__(self, broker: Mosquitto, topics: list[str]) -> None:
        self.messages: list[Seen] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self.client = broker.client(f"watch-{uuid.uuid4().hex[:8]}")
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_a: self._subscribed.set()
        self.client.on_connect = lambda client, *_a: client.subscribe([(t, 1) for t in topics])
        self.client.connect(broker.host, broker.port, keepalive=30)
        self.client.loop_start()
        if not self._subscribed.wait(15):
            raise AssertionError("the topic watcher got no SUBACK")

    def _on_message(self, _client: mqtt.Client, _userdata: object, message: mqtt.MQTTMessage) -> None:
        if message.retain:  # a command is an event, not a state: only live ones count
            return
        with self._cond:
            self.messages.append(Seen(message.topic, bytes(message.payload)))
            self._cond.notify_all()

    def on(self, topic: str) -> list[Seen]:
        with self._cond:
            return [m for m in self.messages if m.topic == topic]

    def wait_for(self, topic: str, count: int = 1, timeout: float = 30.0) -> list[Seen]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(found := [m for m in self.messages if m.topic == topic]) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"{count} message(s) on {topic} expected within {timeout} s; "
                        f"seen: {[(m.topic, m.payload) for m in self.messages]}"
                    )
                self._cond.wait(min(left, 0.2))
            return found

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def watch(broker: Mosquitto) -> Iterator[Callable[[list[str]], TopicWatch]]:
    made: list[TopicWatch] = []

    def make(topics: list[str]) -> TopicWatch:
        made.append(TopicWatch(broker, topics))
        return made[-1]

    yield make
    for item in made:
        item.close()


def publish(broker: Mosquitto, items: list[tuple[str, Any]]) -> None:
    """Publish ``(topic, JSON-able payload)`` in order at QoS 1 and wait for every PUBACK."""
    client = broker.client(f"pub-{uuid.uuid4().hex[:8]}")
    client.connect(broker.host, broker.port, keepalive=30)
    client.loop_start()
    try:
        for topic, payload in items:
            client.publish(topic, json.dumps(payload), qos=1).wait_for_publish(timeout=15)
    finally:
        client.disconnect()
        client.loop_stop()


# ---------------------------------------------------------------------- the simulated fleet
def simulate_command(broker: Mosquitto, *, count: int, rate: float, fleet: Path = DEMO_FLEET) -> list[str]:
    """``edgegw simulate FLEET --count N --rate R --json --quiet`` against ``broker``."""
    broker_arg = f"{broker.host}:{broker.port}"
    return [sys.executable, "-m", "gateway", "simulate", str(fleet), "--broker", broker_arg, "--count",
            str(count), "--rate", f"{rate:g}", "--duration", "120", "--json", "--quiet"]  # fmt: skip


def simulate(broker: Mosquitto, *, count: int, rate: float, fleet: Path = DEMO_FLEET) -> dict[str, Any]:
    """``edgegw simulate FLEET --count N --rate R --json``: its summary."""
    done = subprocess.run(
        simulate_command(broker, count=count, rate=rate, fleet=fleet),
        capture_output=True, text=True, timeout=120, check=False, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return summary


def expected_readings(messages: int, *, rate: float, fleet: Path = DEMO_FLEET) -> Counter[str]:
    """Readings per device carried by the first ``messages`` messages of the fleet's stream
    (the generator is deterministic: same seed and rate, same stream; garbage carries none)."""
    spec = FleetSpec.load(fleet)
    counts: Counter[str] = Counter()
    for message in FleetGenerator(spec, rate=rate).take(messages):
        counts[message.device_id] += len(message.readings)
    return counts


# ---------------------------------------------------------------------- Kafka
@dataclass(frozen=True, slots=True)
class KRecord:
    topic: str
    key: str
    value: dict[str, Any]
    headers: dict[str, str]


def read_kafka(
    bootstrap: str,
    topics: list[str],
    *,
    until: Callable[[list[KRecord]], bool],
    timeout: float = 60.0,
    settle: float = 2.0,
    idle: float = 6.0,
) -> list[KRecord]:
    """Every committed record of ``topics`` (partition 0) from the start, read until
    ``until(records)`` holds and then ``settle`` seconds more (to see any duplicate).
    Gives up early when records came but none for ``idle`` seconds (some never come)."""
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"e2e-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
    })  # fmt: skip
    consumer.assign([TopicPartition(t, 0, OFFSET_BEGINNING) for t in topics])
    out: list[KRecord] = []
    deadline = time.monotonic() + timeout
    settling = False
    last_new = time.monotonic()
    try:
        while time.monotonic() < deadline:
            if out and time.monotonic() - last_new > idle:
                break
            for msg in consumer.consume(10_000, 0.3):
                last_new = time.monotonic()
                if msg.error() is not None:
                    continue
                key, value = msg.key(), msg.value()
                assert isinstance(value, bytes), msg
                key_text = key.decode() if isinstance(key, bytes) else str(key or "")
                out.append(KRecord(str(msg.topic()), key_text, json.loads(value), _headers(msg)))
            if not settling and until(out):
                settling = True
                deadline = min(deadline, time.monotonic() + settle)
    finally:
        with contextlib.suppress(KafkaException):  # closing against a stopped broker may complain
            consumer.close()
    return out


def _headers(msg: Any) -> dict[str, str]:
    raw = msg.headers() or []
    pairs = raw.items() if isinstance(raw, dict) else raw
    return {str(k): v.decode() if isinstance(v, bytes) else str(v) for k, v in pairs}


def readings_by_device(records: list[KRecord], topic: str) -> Counter[str]:
    return Counter(r.value["device_id"] for r in records if r.topic == topic)
