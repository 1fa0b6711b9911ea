"""Every outcome event validates against its schema in schemas/events/; the heartbeat's new
fields are optional (an old heartbeat still validates)."""

from __future__ import annotations

import json

import pytest

from bridge.envelope import CE_TYPES, Envelope, Record
from bridge.policy import Kind
from gateway.deploy import reports
from gateway.deploy.policy import digest
from gateway.errors import ConfigIssue
from tests.bridge.test_envelope import validate

T = 1_780_000_000.5
D = digest(b"version: 2\nrules: []\n")
ISSUE = ConfigIssue(
    "actuator 'attic/fan' is not declared", "desired[hall-pi]@v3", 5, 12, "rules[0].then[0].set"
)


@pytest.mark.parametrize(
    "record",
    [
        reports.applied(
            "hall-pi", source="group/pis", version=2, digest=D, sections=["rules"], settle_s=30, ts=T
        ),
        reports.rejected("hall-pi", source="hall-pi", version=3, digest=D, issues=[ISSUE], ts=T),
        reports.rejected(
            "hall-pi", source="hall-pi", version=None, digest=D, issues=[ConfigIssue("bad")], ts=T
        ),
        reports.rolled_back(
            "hall-pi",
            source="hall-pi",
            version=4,
            digest=D,
            reason="rule x tripped its loop guard",
            restored_version=None,
            ts=T,
        ),
        *[
            reports.command_result(
                "hall-pi",
                source="hall-pi",
                command_id="c-1",
                actuator="garage/light",
                status=status,
                reason="",
                ts=T,
            )
            for status in ("sent", "confirmed", "failed", "refused", "expired")
        ],
        reports.command_result(
            "hall-pi",
            source="hall-pi",
            command_id=None,
            actuator=None,
            status="refused",
            reason="not a JSON object",
            ts=T,
        ),
    ],
)
def test_outcome_events_validate(record: Record) -> None:
    envelope = Envelope("hall-pi", "s1", dict.fromkeys(Kind, "events"))
    msg = envelope.message((1, record.kind, record.key, record.ts, record.data), 0)
    ce_type = dict(msg.headers)["ce_type"].decode()
    assert ce_type == CE_TYPES[record.kind]
    validate(ce_type, json.loads(msg.value))


def test_rejected_carries_the_located_errors() -> None:
    record = reports.rejected("hall-pi", source="hall-pi", version=3, digest=D, issues=[ISSUE], ts=T)
    error = json.loads(record.data)["errors"][0]
    assert (
        error["text"]
        == "desired[hall-pi]@v3:5:12: rules[0].then[0].set: actuator 'attic/fan' is not declared"
    )
    assert (error["line"], error["column"]) == (5, 12)


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"deployment": None, "groups": []},
        {"deployment": {"version": 5, "digest": D, "source": "group/pis"}},
    ],
)
def test_heartbeat_with_and_without_the_deployment(extra: dict[str, object]) -> None:
    data = {
        "gateway_id": "gw-7", "ts": T, "uptime_s": 1.5, "mode": "exactly_once",
        "spool": {"depth": 1, "bytes": 200, "oldest_age_s": None, "dead_letters": 0, "dropped": {}},
        "uplink": {"shipped": 5, "reconnects": 0}, "versions": {"edgegw": "0.1.0"}, **extra,
    }  # fmt: skip
    validate("edgegw.heartbeat.v1", data)
