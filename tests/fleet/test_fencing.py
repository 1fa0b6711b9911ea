"""Fencing: when another instance moved a partition's offset in the store (it owns the
partition now), this instance's batch rolls back whole and it seeks to the stored offset.
Real Kafka, the SQLite store, the consumer in this process."""

from __future__ import annotations

import secrets
import threading
from pathlib import Path

import pytest

from fleet.config import from_values
from fleet.consumer import FleetConsumer
from fleet.model import Changes
from fleet.projection import Projector
from fleet.schemas import Validators
from fleet.sqlite import SqliteStore
from simulators.fleet_feed import FleetFeed, topics_for
from simulators.testbed import KafkaEndpoint
from tests.fleet.helpers import until

pytestmark = [pytest.mark.kafka]


def test_a_batch_behind_the_stored_offset_is_rolled_back_and_the_consumer_seeks(
    kafka: KafkaEndpoint, tmp_path: Path
) -> None:
    topics = topics_for(f"t-fence-{secrets.token_hex(3)}")
    for name in (topics.readings, topics.events, topics.commands, topics.heartbeats):
        kafka.create_topic(name)
    feed = FleetFeed(kafka.bootstrap, topics, gateways=1, devices=1)
    feed.readings(100)
    feed.flush()
    config = from_values(
        **{
            "kafka.bootstrap": kafka.bootstrap,
            "kafka.topics": topics.model_dump(),
            "kafka.group_id": f"fence-{secrets.token_hex(3)}",
            "listen": "none",
        }
    )
    store = SqliteStore(tmp_path / "fleet.db")
    consumer = FleetConsumer(config, store, Projector(Validators.from_folder(), offline_after=180.0))
    stop = threading.Event()
    worker = threading.Thread(target=consumer.serve, args=(stop,), daemon=True)
    worker.start()
    try:
        until(lambda: consumer.stats.events == 100, "the first 100 readings projected")
        other = SqliteStore(tmp_path / "fleet.db")  # another instance took the partition and went on to 150
        other.commit(Changes(), {(topics.readings, 0): (100, 150)})
        other.close()
        feed.readings(50)  # offsets 100..149: the other instance's
        feed.flush()
        until(lambda: consumer.stats.stale_batches >= 1, "the stale batch fenced")
        feed.readings(10)  # offsets 150..159: this instance's again, after its seek
        feed.flush()
        until(lambda: consumer.stats.events == 110, "the readings after the stored offset projected")
    finally:
        stop.set()
        worker.join(10)
    reader = store.reader()
    try:
        assert reader.rows("SELECT readings FROM devices") == [{"readings": 110}]
        assert reader.rows("SELECT next_offset FROM offsets WHERE topic = ?", (topics.readings,)) == [
            {"next_offset": 160}
        ]
    finally:
        reader.close()
        store.close()
