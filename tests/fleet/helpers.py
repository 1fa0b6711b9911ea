"""Running ``edgegw fleet serve`` / ``rebuild`` as real processes, and reading what they made."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition
from ruamel.yaml import YAML

from bridge.config import TopicsConfig
from simulators.testbed import free_port
from simulators.testbed._process import stop_process

__all__ = ["MADE", "FleetProcess", "independent_counts", "table_rows", "until", "write_fleet_config"]


def until(predicate: Callable[[], bool], what: str, timeout: float = 60.0, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(interval)


def write_fleet_config(path: Path, bootstrap: str, topics: TopicsConfig, store: str, **extra: Any) -> Path:
    kafka = {
        "bootstrap": bootstrap,
        "topics": topics.model_dump(),
        "group_id": f"fleet-{path.parent.name}",
        "session_timeout": "6s",
        **extra.pop("kafka", {}),
    }
    config = {
        "kafka": kafka,
        "store": store,
        "listen": f"127.0.0.1:{free_port()}",
        "tick_interval": "0.2s",
        **extra,
    }
    with path.open("w") as f:
        YAML().dump(config, f)
    return path


MADE: list[FleetProcess] = []
"""Every handle made, so that a failed test leaves no process behind (tests/fleet/conftest.py)."""


class FleetProcess:
    """One ``edgegw fleet serve`` subprocess; stderr kept in a log file."""

    def __init__(self, config: Path, log: Path) -> None:
        MADE.append(self)
        self.config = config
        self.log = log
        raw = YAML(typ="safe").load(config.read_text())
        self.base = f"http://{raw['listen']}" if raw.get("listen", "none") != "none" else None
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *, wait: bool = True) -> FleetProcess:
        with self.log.open("ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway", "fleet", "serve", "--config", str(self.config)],
                stdout=err,
                stderr=err,
            )
        if wait and self.base is not None:
            until(self._up, f"fleet serve answering on {self.base} ({self.log})", timeout=30)
        return self

    def _up(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(
                f"fleet serve exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}"
            )
        try:
            self.get("/api/gateways")
        except (OSError, urllib.error.URLError):
            return False
        return True

    def get(self, path: str) -> Any:
        assert self.base is not None
        with urllib.request.urlopen(self.base + path, timeout=10) as resp:
            body = resp.read()
            return (
                json.loads(body) if resp.headers.get_content_type() == "application/json" else body.decode()
            )

    def metric(self, name: str) -> float:
        total = 0.0
        for line in self.get("/metrics").splitlines():
            if line.startswith(name) and not line.startswith("#"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def kill(self) -> None:
        assert self.proc is not None
        stop_process(self.proc, kill=True)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> int:
        assert self.proc is not None
        stop_process(self.proc, timeout=15)
        return self.proc.returncode


def rebuild(config: Path, store: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "fleet",
            "rebuild",
            "--config",
            str(config),
            "--store",
            store,
            *extra,
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=180,
    )


VIEW_QUERIES = {
    "gateways": "SELECT * FROM gateways ORDER BY gateway_id",
    "gateway_events": "SELECT * FROM gateway_events ORDER BY gateway_id, at, online",
    "devices": "SELECT * FROM devices ORDER BY gateway_id, device_id",
    "last_values": "SELECT * FROM last_values ORDER BY gateway_id, device_id, metric",
    "rollups": "SELECT * FROM rollups ORDER BY gateway_id, device_id, metric, hour",
    "rules": "SELECT * FROM rules ORDER BY gateway_id, rule_id",
    "rule_days": "SELECT * FROM rule_days ORDER BY gateway_id, rule_id, day",
    "alarms": "SELECT * FROM alarms ORDER BY gateway_id, rule_id",
    "commands": "SELECT * FROM commands ORDER BY gateway_id, actuator",
    "type_counts": "SELECT * FROM type_counts ORDER BY gateway_id, ce_type",
    "dead_letters": "SELECT * FROM dead_letters ORDER BY topic, part, kafka_offset",
    "offsets": "SELECT * FROM offsets ORDER BY topic, part",
    "high_water": "SELECT * FROM high_water ORDER BY prefix, topic, msg_key",
}


def table_rows(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of a SQLite view, in a stable order."""
    with sqlite3.connect(db) as conn:
        return {name: conn.execute(sql).fetchall() for name, sql in VIEW_QUERIES.items()}


def independent_counts(
    bootstrap: str, topics: TopicsConfig
) -> tuple[Counter[tuple[str, str]], Counter[tuple[str, str]]]:
    """Readings per (gateway, device) and fires per (gateway, rule), read straight from Kafka
    (``read_committed``, one record per ``ce_id``), to compare with the view."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"independent-{time.time_ns()}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
        }
    )
    parts = []
    for topic in (topics.readings, topics.events):
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        parts += [TopicPartition(topic, p, 0) for p in meta.partitions]
    consumer.assign(parts)
    at_end: set[tuple[str, int]] = set()
    seen: set[bytes] = set()
    readings: Counter[tuple[str, str]] = Counter()
    fires: Counter[tuple[str, str]] = Counter()
    try:
        while len(at_end) < len(parts):
            for msg in consumer.consume(10000, timeout=1.0):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        at_end.add((str(msg.topic()), int(msg.partition() or 0)))
                    continue
                headers: dict[str, bytes] = dict(msg.headers() or [])  # type: ignore[arg-type]
                value: bytes = msg.value()  # type: ignore[assignment]
                if headers["ce_id"] in seen:
                    continue
                seen.add(headers["ce_id"])
                gw = headers["ce_source"].decode().removeprefix("edgegw://").split("/")[0]
                if headers["ce_type"] == b"edgegw.reading.v1":
                    readings[(gw, json.loads(value)["device_id"])] += 1
                elif headers["ce_type"] == b"edgegw.rule.fired.v1":
                    fires[(gw, json.loads(value)["rule_id"])] += 1
    finally:
        consumer.close()
    return readings, fires
