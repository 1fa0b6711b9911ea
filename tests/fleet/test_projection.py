"""The projection core, table-driven: records in, read-model changes out (no Kafka, no database)."""

from __future__ import annotations

import orjson
import pytest

from bridge.envelope import Record
from bridge.policy import KIND_NAMES
from fleet.model import Changes, Incoming
from fleet.projection import Projector
from fleet.schemas import Validators
from gateway.deploy import reports
from tests.fleet.events import beat, command, reading, record, rule

VALIDATORS = Validators.from_folder()


def project(*records: Incoming, offline_after: float = 180.0) -> tuple[Projector, Changes]:
    p = Projector(VALIDATORS, offline_after=offline_after)
    return p, p.apply(list(records))


def test_readings_fold_into_last_value_counts_and_hourly_rollups() -> None:
    _, c = project(
        reading("t1", 20.0, 7200.0, seq=1),
        reading("t1", 24.0, 7300.0, seq=2),
        reading("t1", 22.0, 10800.5, seq=3),
        reading("t2", True, 7200.0, seq=4, metric="open"),
    )
    assert c.last_values[("gw1", "t1", "temperature")].value == "22.0"
    assert c.last_values[("gw1", "t2", "open")].value == "true"
    assert c.devices[("gw1", "t1")] == [3, 10800.5]
    assert c.rollups[("gw1", "t1", "temperature", 7200)] == [2, 20.0, 24.0, 44.0]
    assert c.rollups[("gw1", "t1", "temperature", 10800)] == [1, 22.0, 22.0, 22.0]
    assert ("gw1", "t2", "open", 7200) not in c.rollups  # booleans have no mean
    assert c.type_counts[("gw1", "edgegw.reading.v1")] == 4


def test_an_older_reading_never_replaces_the_last_value() -> None:
    _, c = project(reading("t1", 24.0, 200.0, seq=1), reading("t1", 20.0, 100.0, seq=2))
    assert c.last_values[("gw1", "t1", "temperature")].value == "24.0"


@pytest.mark.parametrize(
    ("records", "projected", "duplicates"),
    [
        pytest.param([reading("t1", 1, 1, seq=5), reading("t1", 1, 1, seq=5)], 1, 1, id="same ce_id twice"),
        pytest.param([reading("t1", 1, 1, seq=5), reading("t1", 1, 1, seq=3)], 1, 1, id="older sequence"),
        pytest.param([reading("t1", 1, 1, seq=5), reading("t2", 1, 1, seq=3)], 2, 0, id="other device"),
        pytest.param(
            [reading("t1", 1, 1, seq=5), reading("t1", 1, 1, seq=5, gateway="gw2")], 2, 0, id="other gateway"
        ),
        pytest.param(
            [
                record(
                    "edgegw.command.v1",
                    {"actuator": "a", "payload": {}, "rule_id": None, "ts": 1},
                    ce_id="ext-1",
                )
            ]
            * 2,
            1,
            1,
            id="id without a sequence",
        ),
    ],
)
def test_idempotent_per_ce_id(records: list[Incoming], projected: int, duplicates: int) -> None:
    _, c = project(*records)
    assert sum(c.type_counts.values()) == projected
    assert c.duplicates == duplicates


def test_dedup_state_survives_a_reload() -> None:
    p, _ = project(reading("t1", 1, 1, seq=5))
    fresh = Projector(VALIDATORS, offline_after=180)
    fresh.load(p.high_water, p.seen_ids, p.gateways)
    assert fresh.apply([reading("t1", 1, 1, seq=5)]).duplicates == 1


GOOD_READING = reading("t1", 1.0, 1.0)


@pytest.mark.parametrize(
    ("rec", "reason"),
    [
        (GOOD_READING._replace(value=b"{not json"), "malformed JSON"),
        (GOOD_READING._replace(ce_type=b"edgegw.unknown.v1"), "unknown ce_type 'edgegw.unknown.v1'"),
        (GOOD_READING._replace(ce_type=None), "missing header ce_type"),
        (GOOD_READING._replace(ce_source=b"http://elsewhere"), "is not edgegw://"),
        (GOOD_READING._replace(value=None), "no value"),
        (record("edgegw.reading.v1", {"device_id": "t1"}), "schema edgegw.reading.v1"),
        (reading("bad id", 1.0, 1.0), "must match pattern"),
        (reading("t1", [1.0], 1.0), "schema edgegw.reading.v1"),
        (reading("t1", None, 1.0), "schema edgegw.reading.v1"),
    ],
)
def test_bad_records_are_dead_lettered_with_their_reason(rec: Incoming, reason: str) -> None:
    _, c = project(rec, reading("t9", 5.0, 2.0, seq=9))
    assert len(c.dead_letters) == 1
    assert reason in c.dead_letters[0].reason
    assert c.last_values[("gw1", "t9", "temperature")].value == "5.0"  # the batch went on


def test_rules_fires_per_day_and_alarms() -> None:
    _, c = project(
        rule("fired", "hot", 86400.0 + 10, seq=1),
        rule("emitted", "hot", 86400.0 + 10, severity="warning", seq=2),
        rule("fired", "hot", 86400.0 + 20, seq=3),
        rule("emitted", "info-only", 5.0, severity="info", seq=4),
    )
    assert c.rules[("gw1", "hot")].fires == 2
    assert c.rules[("gw1", "hot")].last_fired == 86420.0
    assert c.fires_per_day[("gw1", "hot", "1970-01-02")] == 2
    assert c.alarms[("gw1", "hot")].active
    assert ("gw1", "info-only") not in c.alarms


def test_a_cleared_rule_ends_its_alarm() -> None:
    _, c = project(
        rule("emitted", "hot", 10.0, severity="critical", seq=1), rule("cleared", "hot", 20.0, seq=2)
    )
    assert not c.alarms[("gw1", "hot")].active
    assert c.rules[("gw1", "hot")].last_cleared == 20.0


def test_last_command_per_actuator() -> None:
    _, c = project(
        command("lamp/set", {"state": "ON"}, 10.0, seq=1), command("lamp/set", {"state": "OFF"}, 20.0, seq=2)
    )
    row = c.commands[("gw1", "lamp/set")]
    assert (row.payload, row.outcome) == ('{"state":"OFF"}', "sent")


DIGEST = "sha256:" + "ab" * 32


def _reported(rec: Record, seq: int) -> Incoming:
    """A record as the gateway builds it (gateway/deploy/reports.py), on the events topic."""
    data = orjson.loads(rec.data)
    gateway = data["gateway_id"]
    kind = f"edgegw.{KIND_NAMES[rec.kind]}.v1"
    return record(kind, data, gateway=gateway, key=rec.key, seq=seq, topic="edgegw.events")


def test_what_gateways_report_of_deployments_and_remote_commands() -> None:
    """The gateway's own outcome events, schema-checked and projected: the two halves agree."""
    common = {"gateway_id": "gw1", "source": "gw1"}
    applied = reports.applied(**common, version=4, digest=DIGEST, sections=["rules"], settle_s=30.0, ts=50.0)
    confirmed = reports.command_result(**common, command_id="c-1", actuator="lamp/set", status="confirmed",
                                       reason="", ts=60.0)  # fmt: skip
    refused = reports.command_result(**common, command_id="c-2", actuator=None, status="refused",
                                     reason="bad payload", ts=61.0)  # fmt: skip
    back = reports.rolled_back("gw2", source="group/hall", version=7, digest=DIGEST, reason="loop guard",
                               restored_version=4, ts=70.0)  # fmt: skip
    _, c = project(_reported(applied, 1), _reported(confirmed, 2), _reported(refused, 3), _reported(back, 1))
    assert c.dead_letters == []
    assert c.deployments == {"gw1": ("4", "applied", 50.0), "gw2": ("7", "rolled_back", 70.0)}
    assert c.outcomes == {("gw1", "lamp/set"): ("confirmed", 60.0)}


@pytest.mark.parametrize(
    ("beats", "now", "expected"),
    [
        pytest.param([100.0], 100.0, [(True, 100.0)], id="first heartbeat: online"),
        pytest.param([100.0, 160.0], 200.0, [(True, 100.0)], id="regular heartbeats"),
        pytest.param([100.0], 279.0, [(True, 100.0)], id="silent less than the delay"),
        pytest.param([100.0], 280.0, [(True, 100.0), (False, 280.0)], id="silent for the delay: offline"),
        pytest.param(
            [100.0, 500.0],
            500.0,
            [(True, 100.0), (False, 280.0), (True, 500.0)],
            id="a gap found in replay: offline at the same time, then online",
        ),
    ],
)
def test_offline_and_online_are_events_timed_by_the_heartbeats(
    beats: list[float], now: float, expected: list[tuple[bool, float]]
) -> None:
    p = Projector(VALIDATORS, offline_after=180.0)
    seen = []
    for i, ts in enumerate(beats):
        seen += p.apply([beat(ts, beat_no=i)]).transitions
    seen += p.tick(now, {("edgegw.heartbeats", 0)}).transitions
    assert [(t.online, t.at) for t in seen] == expected


def test_tick_leaves_gateways_of_partitions_owned_elsewhere_alone() -> None:
    p, _ = project(beat(100.0, partition=1))
    assert not p.tick(1000.0, {("edgegw.heartbeats", 0)}).transitions
    assert p.tick(1000.0, {("edgegw.heartbeats", 1)}).transitions


def test_a_redelivered_heartbeat_counts_once() -> None:
    _p, c = project(beat(100.0), beat(100.0), beat(160.0, depth=7, beat_no=2))
    assert c.beat_counts["gw1"] == 2
    assert c.beats["gw1"].spool_depth == 7


def test_bad_input_counts_per_device_when_the_heartbeat_reports_them() -> None:
    rec = beat(100.0)
    data = {**orjson.loads(rec.value or b"{}"), "bad_input": {"t1": 3, "t2": {"not_json": 2, "range": 1}}}
    validators = Validators({"edgegw.heartbeat.v1": {"type": "object"}})  # a schema that has the field
    c = Projector(validators, offline_after=180.0).apply([rec._replace(value=orjson.dumps(data))])
    assert c.bad_input == {("gw1", "t1"): 3, ("gw1", "t2"): 3}
    assert c.beats["gw1"].bad_input == 6
