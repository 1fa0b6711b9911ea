"""A fast producer of edgegw's CloudEvents, for the fleet view's tests, benchmarks and demo.

Records are built by the gateway's own :class:`bridge.envelope.Envelope` (headers, key,
``ce_id`` with the spool sequence), so the fleet view sees exactly what real gateways
send; only the spool and the rules are skipped, which lets a test put 200,000 events
on a topic in seconds. :class:`FeedCounts` is what an independent reader should find.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Producer

from bridge.config import TopicsConfig
from bridge.envelope import Envelope, OutMessage, Record, encode_item
from gateway.model import Command, Event, EventKind, Reading

__all__ = ["FeedCounts", "FleetFeed", "topics_for"]


def topics_for(prefix: str) -> TopicsConfig:
    """Topic names of their own for one test (``<prefix>.readings``...)."""
    return TopicsConfig(
        readings=f"{prefix}.readings",
        events=f"{prefix}.events",
        commands=f"{prefix}.commands",
        heartbeats=f"{prefix}.heartbeats",
        checkpoints=f"{prefix}.checkpoints",
    )


@dataclass
class FeedCounts:
    readings: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(gateway, device) -> readings produced"""
    fires: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(gateway, rule) -> fired events produced"""
    events: int = 0


class FleetFeed:
    """``gateways`` x ``devices`` simulated sensors; one envelope (spool) per gateway."""

    def __init__(
        self,
        bootstrap: str,
        topics: TopicsConfig,
        *,
        gateways: int = 3,
        devices: int = 10,
        seed: int = 1,
        producer: Mapping[str, Any] | None = None,
    ) -> None:
        self.topics = topics
        self.gateway_ids = [f"gw{i + 1}" for i in range(gateways)]
        self.devices = [f"sensor{j + 1:03d}" for j in range(devices)]
        self._envelopes = {gw: Envelope(gw, f"spool{seed}", topics.of_kind()) for gw in self.gateway_ids}
        self._seq = dict.fromkeys(self.gateway_ids, 0)
        self._beats = dict.fromkeys(self.gateway_ids, 0)
        self._rng = random.Random(seed)
        self.counts = FeedCounts()
        self.last: OutMessage | None = None
        self.producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "linger.ms": 20,
                "batch.num.messages": 10000,
                "enable.idempotence": True,
                "compression.type": "lz4",
                "queue.buffering.max.messages": 1_000_000,
                **(producer or {}),
            }
        )

    def _send(self, msg: OutMessage) -> None:
        while True:
            try:
                self.producer.produce(msg.topic, msg.value, msg.key, headers=msg.headers)  # type: ignore[arg-type]
                self.last = msg
                break
            except BufferError:
                self.producer.poll(0.05)
        self.counts.events += 1

    def _row(self, gw: str, item: Reading | Event | Command | Record) -> None:
        kind, key, ts, data = encode_item(item)
        self._seq[gw] += 1
        self._send(self._envelopes[gw].message((self._seq[gw], kind, key, ts, data), 0))

    def readings(self, n: int, *, ts: float | None = None, spread: float = 0.0) -> None:
        """``n`` readings round-robin over every gateway's devices (temperature, a float)."""
        base = time.time() if ts is None else ts
        sensors = [(gw, dev) for gw in self.gateway_ids for dev in self.devices]
        rnd = self._rng.random
        for i in range(n):
            gw, dev = sensors[i % len(sensors)]
            t = base - spread + spread * i / max(1, n)
            self._row(gw, Reading(dev, "temperature", round(18 + 8 * rnd(), 2), t, t, "°C", True))
            self.counts.readings[(gw, dev)] += 1
            if i % 10_000 == 0:
                self.producer.poll(0)

    def rule(
        self, gw: str, rule_id: str, kind: EventKind, *, severity: str = "warning", ts: float | None = None
    ) -> None:
        t = time.time() if ts is None else ts
        self._row(
            gw,
            Event(
                kind,
                rule_id,
                t,
                severity=severity,
                message=f"{rule_id} {kind}",
                values={f"{self.devices[0]}/temperature": 30.0},
            ),
        )
        if kind is EventKind.FIRED:
            self.counts.fires[(gw, rule_id)] += 1

    def command(self, gw: str, actuator: str, payload: Mapping[str, Any], *, ts: float | None = None) -> None:
        self._row(gw, Command(actuator, dict(payload), rule_id="r1", ts=time.time() if ts is None else ts))

    def heartbeat(self, gw: str, *, ts: float | None = None, depth: int = 0) -> None:
        t = time.time() if ts is None else ts
        self._beats[gw] += 1
        data = {
            "gateway_id": gw,
            "ts": t,
            "uptime_s": 1.0,
            "mode": "exactly_once",
            "spool": {"depth": depth, "bytes": 0, "oldest_age_s": None, "dead_letters": 0, "dropped": {}},
            "uplink": {"shipped": self._seq[gw], "reconnects": 0},
            "versions": {"edgegw": "0.1.0"},
        }
        self._send(self._envelopes[gw].heartbeat(self.topics.heartbeats, data, t, self._beats[gw]))

    def resend(self, msg: OutMessage) -> None:
        """The same record again (same ``ce_id``): an at-least-once redelivery."""
        self.producer.produce(msg.topic, msg.value, msg.key, headers=msg.headers)  # type: ignore[arg-type]

    def raw(
        self, topic: str, value: bytes, headers: list[tuple[str, str | bytes | None]], key: bytes = b"x"
    ) -> None:
        """Anything at all (malformed, unknown types): what a broken producer might send."""
        self.producer.produce(topic, value, key, headers=headers)

    def flush(self, timeout: float = 60.0) -> None:
        left = self.producer.flush(timeout)
        if left:
            raise RuntimeError(f"{left} records not delivered within {timeout} s")
