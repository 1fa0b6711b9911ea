"""A three-node Kafka loses the partition leader mid-run: no loss, no duplicates (chaos)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

import pytest

from bridge.forwarder import Forwarder
from bridge.spool import Spool
from simulators.testbed import KafkaCluster
from tests.bridge.conftest import make_topics, wait_until
from tests.bridge.helpers import header, read_topic, readings

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.chaos]

TOTAL = 20_000


def test_leader_killed_mid_run(
    kafka_cluster: KafkaCluster, topic_prefix: str, bridge_factory: Callable[..., tuple[Spool, Forwarder]]
) -> None:
    topics = make_topics(kafka_cluster, topic_prefix)
    spool, forwarder = bridge_factory(kafka_cluster.bootstrap, topics, batch_rows=1000, send_timeout=15.0)
    forwarder.start()

    def feed() -> None:
        for b in range(TOTAL // 100):
            spool.submit(readings(100, devices=20, start=b * 100, ts=time.time()))
            time.sleep(0.005)
        spool.flush()

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    wait_until(lambda: forwarder.stats().shipped >= 3000, 60, "traffic before the failover")
    leader = kafka_cluster.leader_of(topics.readings)
    kafka_cluster.node(leader).kill()
    feeder.join(120)
    wait_until(lambda: forwarder.stats().shipped >= TOTAL, 240, "the rest to arrive after the failover")
    assert kafka_cluster.leader_of(topics.readings) != leader

    got = read_topic(kafka_cluster.bootstrap, topics.readings, TOTAL, timeout=120)
    assert len(got) == TOTAL
    assert len({header(m, "ce_id") for m in got}) == TOTAL
    per_device: dict[str, list[float]] = {}
    for m in got:
        data = json.loads(m.value())
        per_device.setdefault(data["device_id"], []).append(data["value"])
    for device, values in per_device.items():
        assert values == sorted(values), f"{device} out of order"
