"""``edgegw fleet serve`` and ``rebuild`` against the real Kafka, with the SQLite store.

One fleet is put on the topics (three gateways, readings over two hours, rules firing,
an alarm, commands, heartbeats, a redelivered record and four broken ones), one
``fleet serve`` process projects it, and the tests look at what an operator would see:
the JSON API, ``/metrics``, the web page in a real headless chromium, and a rebuild
from offset 0 that equals the live view row by row.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.model import EventKind
from simulators.fleet_feed import FleetFeed, topics_for
from simulators.testbed import KafkaEndpoint
from tests.fleet.helpers import FleetProcess, rebuild, table_rows, until, write_fleet_config

pytestmark = [pytest.mark.kafka]

READINGS = 3000
BAD = 4


@dataclass
class Fleet:
    feed: FleetFeed
    process: FleetProcess
    config: Path
    db: Path
    folder: Path
    now: float


@pytest.fixture(scope="module")
def fleet(kafka: KafkaEndpoint, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    folder = tmp_path_factory.mktemp("fleet-serve")
    topics = topics_for(f"t-fleet-{secrets.token_hex(3)}")
    kafka.create_topic(topics.readings, partitions=3)
    kafka.create_topic(topics.heartbeats, partitions=2)
    kafka.create_topic(topics.events)
    kafka.create_topic(topics.commands)
    now = time.time()
    feed = FleetFeed(kafka.bootstrap, topics, gateways=3, devices=10)
    for gw in feed.gateway_ids:
        feed.heartbeat(gw, ts=now - 5, depth=12)
    feed.readings(READINGS, ts=now - 10, spread=2 * 3600)
    feed.rule("gw1", "too-hot", EventKind.FIRED, ts=now - 9)
    feed.rule("gw1", "too-hot", EventKind.EMITTED, severity="critical", ts=now - 9)
    feed.command("gw1", "fan/set", {"state": "ON"}, ts=now - 9)
    feed.rule("gw2", "door-open", EventKind.FIRED, ts=now - 8)
    feed.rule("gw2", "door-open", EventKind.EMITTED, severity="warning", ts=now - 8)
    feed.rule("gw2", "door-open", EventKind.CLEARED, ts=now - 7)
    assert feed.last is not None
    feed.resend(feed.last)  # an at-least-once redelivery: same ce_id, counted once
    ok = [("ce_specversion", b"1.0"), ("ce_id", b"gw1/x/1"), ("ce_source", b"edgegw://gw1/t1")]
    feed.raw(topics.readings, b"{not json", [*ok, ("ce_type", b"edgegw.reading.v1")])
    feed.raw(topics.readings, b"{}", [*ok, ("ce_type", b"edgegw.reading.v9")])
    feed.raw(topics.readings, b'{"device_id": "t1"}', [*ok, ("ce_type", b"edgegw.reading.v1")])
    feed.raw(topics.readings, b"{}", [("ce_type", b"edgegw.reading.v1")])
    feed.flush()
    db = folder / "fleet.db"
    config = write_fleet_config(folder / "fleet.yaml", kafka.bootstrap, topics, f"sqlite://{db}")
    process = FleetProcess(config, folder / "serve.log").start()
    until(lambda: process.metric("edgegw_fleet_events_total") >= READINGS + 9, "the fleet projected")
    until(lambda: process.metric("edgegw_fleet_dead_letters_total") >= BAD, "the bad records dead-lettered")
    yield Fleet(feed, process, config, db, folder, now)
    process.stop()


def test_every_device_shows_its_readings_and_last_value(fleet: Fleet) -> None:
    devices = fleet.process.get("/api/devices")
    assert {(d["gateway_id"], d["device_id"]): d["readings"] for d in devices} == fleet.feed.counts.readings
    one = fleet.process.get("/api/devices?gateway=gw2")
    assert {d["gateway_id"] for d in one} == {"gw2"}
    assert len(one) == 10
    temp = one[0]["metrics"]["temperature"]
    assert 18 <= temp["value"] <= 26
    assert temp["unit"] == "°C"
    assert one[0]["spark"]["temperature"]  # hourly means for the sparkline


def test_gateways_online_with_their_heartbeat(fleet: Fleet) -> None:
    gateways = fleet.process.get("/api/gateways")
    assert [(g["gateway_id"], g["online"], g["spool_depth"], g["devices"]) for g in gateways] == [
        ("gw1", True, 12, 10),
        ("gw2", True, 12, 10),
        ("gw3", True, 12, 10),
    ]
    gw1 = fleet.process.get("/api/gateways/gw1")
    assert gw1["version"] == "0.1.0"
    assert [(r["rule_id"], r["fires"]) for r in gw1["rules"]] == [("too-hot", 1)]
    assert [(c["actuator"], c["payload"], c["outcome"]) for c in gw1["commands"]] == [
        ("fan/set", {"state": "ON"}, "sent")
    ]
    assert gw1["events"][0]["online"] is True


def test_only_uncleared_alarms_of_warning_and_above_are_active(fleet: Fleet) -> None:
    alarms = fleet.process.get("/api/alarms")
    assert [(a["gateway_id"], a["rule_id"], a["severity"]) for a in alarms] == [
        ("gw1", "too-hot", "critical")
    ]


def test_rollups_per_sensor_and_hour(fleet: Fleet) -> None:
    rows = fleet.process.get(f"/api/rollups?sensor=gw1/sensor001/temperature&from={fleet.now - 4 * 3600}")
    assert sum(r["count"] for r in rows) == fleet.feed.counts.readings[("gw1", "sensor001")]
    assert all(r["min"] <= r["mean"] <= r["max"] for r in rows)


def test_bad_records_are_dead_lettered_and_a_redelivery_counted_once(fleet: Fleet) -> None:
    dead = fleet.process.get("/api/dead-letters")
    assert dead["count"] == BAD
    reasons = sorted(d["reason"].split(":")[0].split(" '")[0] for d in dead["last"])
    assert reasons == [
        "malformed JSON",
        "missing header ce_id, ce_source",
        "schema edgegw.reading.v1",
        "unknown ce_type",
    ]
    assert fleet.process.metric("edgegw_fleet_duplicates_total") == 1


def test_metrics_show_no_lag_once_caught_up(fleet: Fleet) -> None:
    def lags() -> dict[str, float]:
        text: str = fleet.process.get("/metrics")
        return {
            line.split("{")[1].split("}")[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("edgegw_fleet_consumer_lag{")
        }

    until(lambda: len(lags()) == 7 and not any(lags().values()), "every partition caught up")


def test_the_page_shows_the_fleet_at_a_glance(fleet: Fleet, browser_page: Any, artifacts_dir: Path) -> None:
    page = browser_page
    assert fleet.process.base is not None
    page.goto(fleet.process.base + "/")
    page.wait_for_selector("#devices tbody tr")
    assert page.locator("#sum-gateways").inner_text() == "3 gateways"
    assert page.locator("#sum-online").inner_text() == "3 online, 0 offline"
    alarm = page.locator("#alarms tbody tr")
    assert alarm.count() == 1
    assert "too-hot" in alarm.inner_text()
    assert "critical" in alarm.inner_text()
    assert page.locator("#gateways tbody tr[data-state=online]").count() == 3
    assert page.locator("#devices tbody tr").count() == 30
    row = page.locator("#devices tbody tr[data-gateway=gw3][data-device=sensor007]")
    assert "temperature" in row.inner_text()
    assert row.locator("svg.spark polyline").count() == 1
    page.screenshot(path=str(artifacts_dir / "fleet-view.png"), full_page=True)
    # live: a new alarm reaches the open page without a reload, most severe first
    fleet.feed.rule("gw3", "smoke", EventKind.EMITTED, severity="error")
    fleet.feed.flush()
    page.wait_for_selector("#alarms tbody tr[data-rule=smoke]", timeout=20_000)
    assert page.locator("#sum-alarms").inner_text() == "2 active alarms"
    assert page.locator("#alarms tbody tr").first.get_attribute("data-rule") == "too-hot"


def test_rebuild_equals_the_live_view_row_by_row(fleet: Fleet) -> None:
    until(lambda: not fleet.process.metric("edgegw_fleet_consumer_lag{"), "caught up")
    assert fleet.process.stop() == 0
    fleet.process.start()  # for the tests that may run after this one
    rebuilt = fleet.folder / "rebuilt.db"
    done = rebuild(fleet.config, f"sqlite://{rebuilt}")
    assert done.returncode == 0, done.stderr
    assert f"rebuilt {fleet.feed.counts.events:,} events (4 dead letters, 1 duplicates)" in done.stdout
    assert "partitions at their end" in done.stderr
    live, again = table_rows(fleet.db), table_rows(rebuilt)
    for table in live:
        assert again[table] == live[table], table
    assert len(live["devices"]) == 30
    refused = rebuild(fleet.config, f"sqlite://{rebuilt}")
    assert refused.returncode == 1
    assert "is not empty" in refused.stderr
