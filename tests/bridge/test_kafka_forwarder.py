"""The forwarder against the real test Kafka: exactly once, order, schemas, checkpoints, dead letters."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bridge.config import SpoolConfig
from bridge.envelope import Record
from bridge.forwarder import Forwarder
from bridge.policy import Kind, lane_priorities
from bridge.spool import Spool
from gateway.model import Command, Event, EventKind
from simulators.testbed import KafkaEndpoint
from tests.bridge.conftest import make_topics, wait_until
from tests.bridge.helpers import header, read_topic, readings
from tests.bridge.test_envelope import validate

pytestmark = pytest.mark.kafka

Factory = Callable[..., tuple[Spool, Forwarder]]


def _by_device(msgs: list[object]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for m in msgs:
        data = json.loads(m.value())  # type: ignore[attr-defined]
        out.setdefault(data["device_id"], []).append(data["value"])
    return out


@pytest.mark.parametrize("mode", ["exactly_once", "at_least_once"])
def test_everything_reaches_kafka_once_in_order_with_valid_envelopes(
    kafka: KafkaEndpoint, topic_prefix: str, bridge_factory: Factory, mode: str
) -> None:
    topics = make_topics(kafka, topic_prefix, partitions=3)
    spool, forwarder = bridge_factory(kafka.bootstrap, topics, mode=mode, batch_rows=700)
    t = time.time()
    spool.append_many(readings(3000, devices=20, ts=t))
    spool.append_many([Event(EventKind.FIRED, "hot", t, "warning", "", {"dev-1/temperature": 30.0}),
                       Command("dev-1/relay", {"state": "on"}, "hot", t)])  # fmt: skip
    forwarder.start()
    spool.append_many(readings(1000, devices=20, start=3000, ts=t))  # live data behind the backlog
    wait_until(lambda: forwarder.stats().shipped >= 4002, 60, "the spool to drain")

    got = read_topic(kafka.bootstrap, topics.readings, 4000, partitions=range(3))
    assert len(got) == 4000
    ids = [header(m, "ce_id") for m in got]
    assert len(set(ids)) == 4000
    for device, values in _by_device(got).items():
        assert values == sorted(values), f"{device} out of order"
        assert len(values) == 200
    sample = got[0]
    assert header(sample, "ce_specversion") == b"1.0"
    assert header(sample, "ce_type") == b"edgegw.reading.v1"
    assert header(sample, "content-type") == b"application/json"
    assert header(sample, "ce_source") == f"edgegw://gw-test/{sample.key().decode()}".encode()
    for m in got[:200]:
        validate("edgegw.reading.v1", json.loads(m.value()))

    events = read_topic(kafka.bootstrap, topics.events, 1, partitions=range(3))
    commands = read_topic(kafka.bootstrap, topics.commands, 1, partitions=range(3))
    assert [header(m, "ce_type") for m in events] == [b"edgegw.rule.fired.v1"]
    assert [header(m, "ce_type") for m in commands] == [b"edgegw.command.v1"]
    validate("edgegw.rule.fired.v1", json.loads(events[0].value()))
    validate("edgegw.command.v1", json.loads(commands[0].value()))
    beats = read_topic(kafka.bootstrap, topics.heartbeats, 1, settle=0.5, partitions=range(3))
    assert beats, "a heartbeat at start"
    validate("edgegw.heartbeat.v1", json.loads(beats[0].value()))
    wait_until(lambda: spool.stats().depth == 0, 10, "shipped rows to leave the spool")


def test_restart_drops_rows_the_checkpoint_covers(
    kafka: KafkaEndpoint, topic_prefix: str, bridge_factory: Factory, tmp_path: Path
) -> None:
    topics = make_topics(kafka, topic_prefix)
    spool, forwarder = bridge_factory(kafka.bootstrap, topics)
    spool.append_many(readings(500))
    spool.flush()
    # the state of the file before the shipped rows were deleted (a crash right after the commit)
    snapshot = tmp_path / "snapshot.db"
    spool._store.conn.execute(f"VACUUM INTO '{snapshot}'")
    forwarder.start()
    wait_until(lambda: forwarder.stats().shipped == 500, 60, "the first run to ship")
    forwarder.stop()
    spool.close()

    restored = Spool.open(SpoolConfig(path=snapshot), lanes=lane_priorities(topics.of_kind()))
    assert restored.spool_id == spool.spool_id
    assert restored.stats().depth == 500
    restored.append_many(readings(10, start=500))
    _, second = bridge_factory(kafka.bootstrap, topics, spool=restored)
    second.start()
    wait_until(lambda: second.stats().shipped == 10, 60, "the second run to ship the new rows")
    got = read_topic(kafka.bootstrap, topics.readings, 510)
    assert [json.loads(m.value())["value"] for m in got] == [float(i) for i in range(510)]
    wait_until(lambda: restored.stats().depth == 0, 10, "the covered rows to be dropped")


def test_a_record_kafka_refuses_goes_to_dead_letters_and_the_rest_flows(
    kafka: KafkaEndpoint, topic_prefix: str, bridge_factory: Factory
) -> None:
    topics = make_topics(kafka, topic_prefix, config={"commands": {"max.message.bytes": "20000"}})
    spool, forwarder = bridge_factory(
        kafka.bootstrap, topics, producer_overrides={"batch.size": 10000, "linger.ms": 0}
    )
    # broker-side: over the topic's max.message.bytes even after zstd (random bytes do not compress)
    big = json.dumps({"blob": os.urandom(100_000).hex()}).encode()
    huge = json.dumps({"blob": "y" * 2_000_000}).encode()  # client-side: over message.max.bytes
    t = time.time()
    spool.append_many([Command("a/b", {"n": 1}, None, t), Record(Kind.COMMAND, "a", t, big),
                       Command("a/b", {"n": 2}, None, t), Record(Kind.READING, "dev-0", t, huge),
                       *readings(100, ts=t)])  # fmt: skip
    forwarder.start()
    wait_until(lambda: forwarder.stats().shipped >= 102 and spool.stats().depth == 0, 60, "the rest to flow")
    assert spool.stats().dead_letters == 2
    assert forwarder.stats().dead_lettered == 2
    got = read_topic(kafka.bootstrap, topics.commands, 2)
    assert [json.loads(m.value())["payload"]["n"] for m in got] == [1, 2]
    assert len(read_topic(kafka.bootstrap, topics.readings, 100)) == 100


def test_backlog_copy_is_not_a_different_spool(tmp_path: Path) -> None:
    a = Spool.open(SpoolConfig(path=tmp_path / "a.db"))
    a.close()
    shutil.copy(tmp_path / "a.db", tmp_path / "b.db")
    b = Spool.open(SpoolConfig(path=tmp_path / "b.db"))
    assert b.spool_id == a.spool_id  # same file, same id: the checkpoint applies
    b.close()


def test_a_spool_that_went_back_in_time_never_reuses_shipped_sequences(
    kafka: KafkaEndpoint, topic_prefix: str, bridge_factory: Factory, tmp_path: Path
) -> None:
    """Issue 17, item 4: after a power cut under ``synchronous=normal`` the spool can come
    back older than what Kafka's checkpoint knows was shipped. New rows would then get
    sequences the checkpoint covers, be taken for shipped and never sent; they are
    renumbered above the checkpoint instead, and every one reaches Kafka once."""
    topics = make_topics(kafka, topic_prefix)
    spool, forwarder = bridge_factory(kafka.bootstrap, topics)
    spool.append_many(readings(50))
    spool.flush()
    older = tmp_path / "older.db"  # what the disk holds after the cut: only the first 50 rows
    spool._store.conn.execute(f"VACUUM INTO '{older}'")
    spool.append_many(readings(50, start=50))  # acknowledged, then lost by the cut...
    forwarder.start()
    wait_until(lambda: forwarder.stats().shipped == 100, 60, "the first run to ship")  # ...after shipping
    forwarder.stop()
    spool.close()

    restored = Spool.open(SpoolConfig(path=older), lanes=lane_priorities(topics.of_kind()))
    assert restored.spool_id == spool.spool_id
    restored.append_many(readings(30, start=100))  # new readings: sequences 51..80 again
    _, second = bridge_factory(kafka.bootstrap, topics, spool=restored)
    second.start()
    wait_until(lambda: second.stats().shipped == 30, 60, "the new rows to ship")
    restored.append_many(readings(5, start=130))
    wait_until(lambda: second.stats().shipped == 35, 60, "later rows to ship")
    got = read_topic(kafka.bootstrap, topics.readings, 135)
    assert [json.loads(m.value())["value"] for m in got] == [float(i) for i in range(135)]
    wait_until(lambda: restored.stats().depth == 0, 10, "the shipped rows to be dropped")
