"""Kafka away while readings flow: the spool keeps them; afterwards every reading is in Kafka
exactly once (read_committed), in order per device, backlog before live data."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

import pytest

from bridge.forwarder import Forwarder
from bridge.spool import Spool
from simulators.testbed import KafkaNode
from tests.bridge.conftest import make_topics, wait_until
from tests.bridge.helpers import header, read_topic, readings

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

TOTAL = 20_000
DEVICES = 100


def _feed(spool: Spool, stop_at: float, done: threading.Event) -> None:
    """20,000 readings spread over ``stop_at`` seconds, 100 per batch (a burst of MQTT messages)."""
    start = time.monotonic()
    batches = TOTAL // 100
    for b in range(batches):
        due = start + stop_at * b / batches
        time.sleep(max(0.0, due - time.monotonic()))
        spool.submit(readings(100, devices=DEVICES, start=b * 100, ts=time.time()))
    spool.flush()
    done.set()


def _outage(kafka_node: KafkaNode, prefix: str, factory: Callable[..., tuple[Spool, Forwarder]],
            outage: float) -> None:  # fmt: skip
    topics = make_topics(kafka_node, prefix, partitions=2)
    spool, forwarder = factory(kafka_node.bootstrap, topics, batch_rows=2000)
    forwarder.start()
    fed = threading.Event()
    feeder = threading.Thread(target=_feed, args=(spool, outage + 10, fed), daemon=True)
    feeder.start()
    time.sleep(3)
    kafka_node.stop()  # Kafka goes away while readings keep flowing into the spool
    time.sleep(outage)
    backlog = spool.stats().depth
    assert backlog > 0, "readings were spooled while Kafka was away"
    assert forwarder.stats().shipped < TOTAL
    kafka_node.start()
    assert fed.wait(120)
    wait_until(lambda: forwarder.stats().shipped >= TOTAL, 180, "the backlog to drain")

    got = read_topic(kafka_node.bootstrap, topics.readings, TOTAL, partitions=(0, 1), timeout=120)
    ids = [header(m, "ce_id") for m in got]
    assert len(got) == TOTAL, f"{len(got)} records for {TOTAL} readings"
    assert len(set(ids)) == TOTAL, "no duplicates"
    per_device: dict[str, list[float]] = {}
    for m in got:
        data = json.loads(m.value())
        per_device.setdefault(data["device_id"], []).append(data["value"])
    assert len(per_device) == DEVICES
    for device, values in per_device.items():
        assert values == sorted(values), f"{device} out of order"
    stats = forwarder.stats()
    assert stats.reconnects >= 2
    assert spool.stats().dropped == {}


def test_kafka_outage_loses_and_duplicates_nothing(
    kafka_node: KafkaNode, topic_prefix: str, bridge_factory: Callable[..., tuple[Spool, Forwarder]]
) -> None:
    _outage(kafka_node, topic_prefix, bridge_factory, outage=15.0)


@pytest.mark.slow  # the figure: 20,000 readings, Kafka stopped 60 s; runs in CI
def test_kafka_outage_of_a_full_minute(
    kafka_node: KafkaNode, topic_prefix: str, bridge_factory: Callable[..., tuple[Spool, Forwarder]]
) -> None:
    _outage(kafka_node, topic_prefix, bridge_factory, outage=60.0)
