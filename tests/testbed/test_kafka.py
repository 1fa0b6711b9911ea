"""The Kafka of the test bed is a real Apache Kafka (KRaft): transactions, durability."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from simulators.testbed import KafkaCluster, KafkaEndpoint, KafkaNode
from simulators.testbed.kafka import _kafka_uuid

pytestmark = pytest.mark.kafka


def _transactional_producer(bootstrap: str) -> Producer:
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "transactional.id": f"testbed-{uuid.uuid4().hex[:8]}",
            "enable.idempotence": True,
        }
    )
    producer.init_transactions(30)
    return producer


def _produce_batch(producer: Producer, topic: str, values: list[str], *, commit: bool) -> None:
    producer.begin_transaction()
    for value in values:
        producer.produce(topic, key=b"dev-1", value=value.encode())
    if commit:
        producer.commit_transaction(30)
    else:
        producer.flush(30)  # the records reach the log, then the transaction is aborted
        producer.abort_transaction(30)


def _read_all(bootstrap: str, topic: str, expected: int, *, isolation: str = "read_committed") -> list[str]:
    """Read the topic from the start: at least ``expected`` records, then 1 s more for extras."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "isolation.level": isolation,
        }
    )
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    values: list[str] = []
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            value = msg.value() if msg is not None and not msg.error() else None
            if value is not None:
                values.append(value.decode())
            if len(values) >= expected:
                deadline = min(deadline, time.monotonic() + 1.0)
    finally:
        consumer.close()
    return values


def test_committed_records_are_read_and_aborted_ones_are_not(kafka: KafkaEndpoint, topic_prefix: str) -> None:
    topic = kafka.create_topic(topic_prefix)
    producer = _transactional_producer(kafka.bootstrap)
    _produce_batch(producer, topic, ["c1", "c2", "c3"], commit=True)
    _produce_batch(producer, topic, ["a1", "a2"], commit=False)
    _produce_batch(producer, topic, ["c4"], commit=True)

    assert _read_all(kafka.bootstrap, topic, 4) == ["c1", "c2", "c3", "c4"]
    # the aborted records did reach the log: a read_uncommitted reader sees them
    assert _read_all(kafka.bootstrap, topic, 6, isolation="read_uncommitted") == [
        "c1", "c2", "c3", "a1", "a2", "c4",
    ]  # fmt: skip


@pytest.mark.slow
def test_committed_records_survive_kill_9_and_restart(kafka_node: KafkaNode, topic_prefix: str) -> None:
    topic = kafka_node.create_topic(topic_prefix)
    values = [f"r{i}" for i in range(1000)]
    producer = _transactional_producer(kafka_node.bootstrap)
    _produce_batch(producer, topic, values, commit=True)
    del producer

    pid_before = kafka_node.pid
    kafka_node.restart(kill=True)  # SIGKILL, then a new JVM on the same ports and data dir
    assert kafka_node.pid != pid_before

    assert _read_all(kafka_node.bootstrap, topic, len(values)) == values
    # and the restarted node takes new transactions
    producer = _transactional_producer(kafka_node.bootstrap)
    _produce_batch(producer, topic, ["after-restart"], commit=True)
    assert _read_all(kafka_node.bootstrap, topic, len(values) + 1)[-1] == "after-restart"


@pytest.mark.chaos
@pytest.mark.slow
def test_three_node_cluster_survives_leader_kill(kafka_cluster: KafkaCluster, topic_prefix: str) -> None:
    topic = kafka_cluster.create_topic(topic_prefix)
    producer = _transactional_producer(kafka_cluster.bootstrap)
    _produce_batch(producer, topic, ["before"], commit=True)
    leader = kafka_cluster.leader_of(topic)
    kafka_cluster.node(leader).kill()
    _produce_batch(producer, topic, ["after"], commit=True)
    assert _read_all(kafka_cluster.bootstrap, topic, 2) == ["before", "after"]
    assert kafka_cluster.leader_of(topic) != leader


def test_format_takes_a_cluster_id_that_starts_with_a_dash(tmp_path: Path) -> None:
    # 1 in 64 random ids does; StorageTool read "-t -xyz" as two options and failed
    node = KafkaNode(tmp_path / "node")
    node.cluster_id = "seed22"
    assert _kafka_uuid(node.cluster_id).startswith("-")
    node.format()
    assert (node.data_dir / "meta.properties").exists()
