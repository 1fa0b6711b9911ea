"""A three-node Kafka loses the partition leader while the forwarder streams: no loss, no
duplicates, per-device order kept.

The short run is part of the default run (CI); the long one is a chaos run (``make chaos``).
Both kill the leader once (``kill -9``) while readings are still being fed and shipped, then
check with a ``read_committed`` consumer that every record arrived exactly once.
"""

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

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

BridgeFactory = Callable[..., tuple[Spool, Forwarder]]


def leader_killed_mid_stream(
    cluster: KafkaCluster,
    prefix: str,
    bridge_factory: BridgeFactory,
    *,
    total: int,
    batch: int,
    pause: float,
    kill_after: int,
    batch_rows: int,
) -> int:
    """Feed ``total`` readings (``batch`` at a time, ``pause`` s apart) of 20 devices; once
    ``kill_after`` are in Kafka, kill the readings partition's leader; then every reading
    must be in Kafka exactly once, each device's in order. Returns how many readings had
    been fed when the leader died."""
    topics = make_topics(cluster, prefix)
    spool, forwarder = bridge_factory(cluster.bootstrap, topics, batch_rows=batch_rows, send_timeout=15.0)
    forwarder.start()
    fed = 0

    def feed() -> None:
        nonlocal fed
        for start in range(0, total, batch):
            spool.submit(readings(batch, devices=20, start=start, ts=time.time()))
            fed = start + batch
            time.sleep(pause)
        spool.flush()

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    wait_until(lambda: forwarder.stats().shipped >= kill_after, 60, "traffic before the failover")
    leader = cluster.leader_of(topics.readings)
    cluster.node(leader).kill()
    fed_at_kill = fed
    feeder.join(120)
    wait_until(lambda: forwarder.stats().shipped >= total, 240, "the rest to arrive after the failover")
    assert cluster.leader_of(topics.readings) != leader

    got = read_topic(cluster.bootstrap, topics.readings, total, timeout=120)  # read_committed
    ids = [header(m, "ce_id") for m in got]
    assert len(ids) == total, f"{len(ids)} records for {total} readings"
    assert len(set(ids)) == total, "duplicates"
    values = sorted(json.loads(m.value())["value"] for m in got)
    assert values == [float(i) for i in range(total)], "some reading is missing"
    per_device: dict[str, list[float]] = {}
    for m in got:
        data = json.loads(m.value())
        per_device.setdefault(data["device_id"], []).append(data["value"])
    for device, device_values in per_device.items():
        assert device_values == sorted(device_values), f"{device} out of order"
    return fed_at_kill


def test_leader_killed_mid_stream(
    kafka_cluster: KafkaCluster, topic_prefix: str, bridge_factory: BridgeFactory
) -> None:
    """Short: 3,000 readings over about 6 s, the leader killed after the first 600."""
    total = 3000
    fed_at_kill = leader_killed_mid_stream(
        kafka_cluster, topic_prefix, bridge_factory,
        total=total, batch=50, pause=0.1, kill_after=600, batch_rows=200,
    )  # fmt: skip
    assert fed_at_kill < total, "the stream had ended when the leader was killed"


@pytest.mark.chaos
def test_leader_killed_mid_run(
    kafka_cluster: KafkaCluster, topic_prefix: str, bridge_factory: BridgeFactory
) -> None:
    """Long: 20,000 readings, the leader killed after the first 3,000."""
    leader_killed_mid_stream(
        kafka_cluster, topic_prefix, bridge_factory,
        total=20_000, batch=100, pause=0.005, kill_after=3000, batch_rows=1000,
    )  # fmt: skip
