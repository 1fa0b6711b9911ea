"""Fakes and helpers for the bridge tests: clock, in-memory uplink, Kafka reader."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from bridge.checkpoint import Checkpoint
from bridge.config import SpoolConfig
from bridge.envelope import OutMessage
from bridge.forwarder import SendResult
from gateway.errors import UplinkError
from gateway.model import Reading


class FakeClock:
    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def spool_config(tmp_path: Path, **kw: Any) -> SpoolConfig:
    return SpoolConfig(path=tmp_path / "spool.db", **kw)


def readings(n: int, *, devices: int = 10, start: int = 0, ts: float = 1_800_000_000.0) -> list[Reading]:
    return [
        Reading(f"dev-{i % devices}", "temperature", float(i), ts + i * 0.001, ts + i * 0.001, "C")
        for i in range(start, start + n)
    ]


@dataclass
class FakeUplink:
    """An in-memory Kafka: committed records per topic, a checkpoint, scripted failures."""

    committed: list[OutMessage] = field(default_factory=list)
    checkpoint: Checkpoint | None = None
    connect_failures: int = 0
    send_failures: int = 0
    refuse_seqs: set[int] = field(default_factory=set)
    exactly_once: bool = True
    connects: int = 0
    sends: int = 0

    def factory(self) -> FakeUplink:
        return self

    def connect(self) -> Checkpoint | None:
        self.connects += 1
        if self.connect_failures > 0:
            self.connect_failures -= 1
            raise UplinkError("fake: broker away")
        return self.checkpoint

    def send(self, messages: Sequence[OutMessage], checkpoint: Checkpoint | None) -> SendResult:
        self.sends += 1
        if self.send_failures > 0:
            self.send_failures -= 1
            raise UplinkError("fake: send timed out")
        permanent = {
            i: ("msg_size_too_large", "MSG_SIZE_TOO_LARGE: fake")
            for i, m in enumerate(messages)
            if m.seq is not None and m.seq in self.refuse_seqs
        }
        if permanent and self.exactly_once:
            return SendResult(permanent=permanent)
        self.committed.extend(m for i, m in enumerate(messages) if i not in permanent)
        if checkpoint is not None:
            self.checkpoint = checkpoint
        return SendResult(permanent=permanent)

    def close(self) -> None:
        pass

    def values(self, topic: str | None = None) -> list[dict[str, Any]]:
        return [json.loads(m.value) for m in self.committed if topic is None or m.topic == topic]


def header(msg: Any, name: str) -> bytes | None:
    for key, value in msg.headers() or ():
        if key == name:
            return bytes(value)
    return None


def read_topic(
    bootstrap: str,
    topic: str,
    expected: int,
    *,
    partitions: Iterable[int] = (0,),
    timeout: float = 120.0,
    settle: float = 2.0,
    extra: dict[str, Any] | None = None,
) -> list[Any]:
    """Every committed record of ``topic`` from the start: at least ``expected``, then ``settle`` s more."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            **(extra or {}),
        }
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            out.extend(msg for msg in consumer.consume(10_000, 0.5) if msg.error() is None)
            if len(out) >= expected:
                deadline = min(deadline, time.monotonic() + settle)
    finally:
        consumer.close()
    return out
