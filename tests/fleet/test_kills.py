"""The projection is exactly once without Kafka transactions: SIGKILLs and rebalances while
events flow lose and double nothing (real Kafka; SQLite, and a real PostgreSQL shared by two
instances in one consumer group).

The view's counts (readings per device, fires per rule) are compared with those of an
independent consumer that reads the topics straight from Kafka.
"""

from __future__ import annotations

import secrets
import sqlite3
import threading
from collections import Counter
from pathlib import Path

import psycopg
import pytest

from bridge.config import TopicsConfig
from gateway.model import EventKind
from simulators.fleet_feed import FleetFeed, topics_for
from simulators.testbed import KafkaEndpoint
from tests.fleet.helpers import FleetProcess, independent_counts, until, write_fleet_config

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

Counts = tuple[Counter[tuple[str, str]], Counter[tuple[str, str]]]


def _produce(feed: FleetFeed, total: int, done: threading.Event) -> None:
    """``total`` events: readings, and a rule firing after every 1,000 readings, in chunks."""
    try:
        for gw in feed.gateway_ids:
            feed.heartbeat(gw)
        sent = 0
        while sent < total:
            feed.readings(999)
            feed.rule(feed.gateway_ids[sent % 3], f"rule{sent % 7}", EventKind.FIRED)
            sent += 1000
        feed.flush()
    finally:
        done.set()


def _topics(kafka: KafkaEndpoint, readings: int = 4) -> tuple[FleetFeed, TopicsConfig]:
    topics = topics_for(f"t-kills-{secrets.token_hex(3)}")
    kafka.create_topic(topics.readings, partitions=readings)
    kafka.create_topic(topics.events, partitions=2)
    kafka.create_topic(topics.commands)
    kafka.create_topic(topics.heartbeats)
    return FleetFeed(kafka.bootstrap, topics, gateways=3, devices=20), topics


def _sqlite_counts(db: Path) -> Counts:
    with sqlite3.connect(db) as conn:
        readings = Counter(
            {(g, d): n for g, d, n in conn.execute("SELECT gateway_id, device_id, readings FROM devices")}
        )
        fires = Counter(
            {(g, r): n for g, r, n in conn.execute("SELECT gateway_id, rule_id, fires FROM rules")}
        )
    return readings, fires


def _pg_counts(url: str) -> Counts:
    with psycopg.connect(url) as conn:
        readings = Counter(
            {(g, d): n for g, d, n in conn.execute("SELECT gateway_id, device_id, readings FROM devices")}
        )
        fires = Counter(
            {(g, r): n for g, r, n in conn.execute("SELECT gateway_id, rule_id, fires FROM rules")}
        )
    return readings, fires


def test_five_sigkills_while_200000_events_flow_lose_and_double_nothing(
    kafka: KafkaEndpoint, tmp_path: Path
) -> None:
    feed, topics = _topics(kafka)
    db = tmp_path / "fleet.db"
    config = write_fleet_config(
        tmp_path / "fleet.yaml",
        kafka.bootstrap,
        topics,
        f"sqlite://{db}",
        kafka={"instance_id": "fleet-a"},
        batch_size=2000,
    )
    done = threading.Event()
    producer = threading.Thread(target=_produce, args=(feed, 200_000, done), daemon=True)
    process = FleetProcess(config, tmp_path / "serve.log").start()
    producer.start()
    kills = 0
    while kills < 5:
        until(lambda: process.metric("edgegw_fleet_events_total") >= 8000, "projecting", timeout=90)
        process.kill()
        kills += 1
        process.start()
    done.wait(120)
    assert done.is_set()
    expected = independent_counts(kafka.bootstrap, topics)
    assert sum(expected[0].values()) == 199_800
    assert expected == (feed.counts.readings, feed.counts.fires)
    until(
        lambda: _sqlite_counts(db) == expected, "the view's counts equal Kafka's", timeout=120, interval=0.5
    )
    assert process.stop() == 0


def test_two_instances_over_postgres_one_killed_mid_stream(
    kafka: KafkaEndpoint, tmp_path: Path, pg_url: str
) -> None:
    feed, topics = _topics(kafka)
    configs = [
        write_fleet_config(
            tmp_path / f"fleet-{name}.yaml",
            kafka.bootstrap,
            topics,
            pg_url,
            kafka={"instance_id": f"fleet-{name}", "group_id": "fleet-shared"},
            batch_size=2000,
        )
        for name in ("a", "b", "c")
    ]
    a = FleetProcess(configs[0], tmp_path / "a.log").start()
    b = FleetProcess(configs[1], tmp_path / "b.log").start()
    done = threading.Event()
    producer = threading.Thread(target=_produce, args=(feed, 100_000, done), daemon=True)
    producer.start()
    until(
        lambda: a.metric("edgegw_fleet_events_total") >= 5000 and b.metric("edgegw_fleet_events_total") > 0,
        "both instances projecting their partitions",
        timeout=90,
    )
    a.kill()
    c = FleetProcess(configs[2], tmp_path / "c.log").start()
    done.wait(120)
    assert done.is_set()
    expected = independent_counts(kafka.bootstrap, topics)
    assert sum(expected[0].values()) == 99_900
    until(
        lambda: _pg_counts(pg_url) == expected,
        "the shared view's counts equal Kafka's",
        timeout=120,
        interval=0.5,
    )
    assert c.metric("edgegw_fleet_consumer_lag{") == 0  # caught up, and the new instance owns partitions:
    assert "edgegw_fleet_consumer_lag{" in c.get("/metrics")
    # the API over the shared PostgreSQL view answers the same as the tables
    devices = c.get("/api/devices")
    assert {(d["gateway_id"], d["device_id"]): d["readings"] for d in devices} == expected[0]
    assert [(g["gateway_id"], g["online"]) for g in c.get("/api/gateways")] == [
        ("gw1", True),
        ("gw2", True),
        ("gw3", True),
    ]
    gw1 = c.get("/api/gateways/gw1")
    assert {r["rule_id"]: r["fires"] for r in gw1["rules"]} == {
        r: n for (g, r), n in expected[1].items() if g == "gw1"
    }
    assert b.stop() == 0
    assert c.stop() == 0
