"""Fixtures of the bridge tests: per-test Kafka topics and a forwarder factory."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.config import KafkaConfig, SpoolConfig, TopicsConfig
from bridge.forwarder import Forwarder
from bridge.policy import lane_priorities
from bridge.spool import Spool
from simulators.testbed import KafkaEndpoint


def make_topics(
    kafka: KafkaEndpoint, prefix: str, *, partitions: int = 1, config: dict[str, dict[str, str]] | None = None
) -> TopicsConfig:
    topics = TopicsConfig(
        readings=f"{prefix}.readings",
        events=f"{prefix}.events",
        commands=f"{prefix}.commands",
        heartbeats=f"{prefix}.heartbeats",
        checkpoints=f"{prefix}.checkpoints",
    )
    for name in (topics.readings, topics.events, topics.commands, topics.heartbeats):
        kafka.create_topic(name, partitions=partitions, config=(config or {}).get(name.rsplit(".", 1)[1]))
    return topics


@pytest.fixture
def bridge_factory(tmp_path: Path) -> Iterator[Callable[..., tuple[Spool, Forwarder]]]:
    """Open a spool and a Kafka forwarder for it; both are closed at the end of the test."""
    made: list[tuple[Spool, Forwarder]] = []

    def make(
        bootstrap: str,
        topics: TopicsConfig,
        *,
        spool: Spool | None = None,
        gateway_id: str = "gw-test",
        spool_kw: dict[str, Any] | None = None,
        **kafka_kw: Any,
    ) -> tuple[Spool, Forwarder]:
        kafka_kw.setdefault("backoff_initial", 0.2)
        kafka_kw.setdefault("backoff_max", 2.0)
        kafka_kw.setdefault("send_timeout", 10.0)
        secrets = kafka_kw.pop("secrets", None)
        config = KafkaConfig(bootstrap=bootstrap, topics=topics, **kafka_kw)
        if spool is None:
            spool = Spool.open(
                SpoolConfig(path=tmp_path / f"spool-{len(made)}.db", **(spool_kw or {})),
                lanes=lane_priorities(topics.of_kind()),
            )
        forwarder = Forwarder.for_kafka(spool, config, gateway_id=gateway_id, secrets=secrets)
        made.append((spool, forwarder))
        return spool, forwarder

    yield make
    for spool, forwarder in made:
        forwarder.stop(timeout=20)
        spool.close()


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    import time  # noqa: PLC0415

    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)
