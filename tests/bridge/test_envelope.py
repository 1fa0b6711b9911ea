"""CloudEvents binary mode: headers, ids, keys, and the data against schemas/events/."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest

from bridge.envelope import CE_TYPES, HEARTBEAT_TYPE, Envelope, Record, SpoolRow, ce_time, encode_item
from bridge.policy import Kind
from gateway.model import Command, Event, EventKind, Reading

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas" / "events"


def validate(ce_type: str, data: Any) -> None:
    schema = json.loads((SCHEMAS / f"{ce_type}.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(data, schema, cls=jsonschema.Draft202012Validator)


def test_every_type_has_a_schema() -> None:
    names = {p.name.removesuffix(".json") for p in SCHEMAS.glob("*.json")}
    assert names == {*CE_TYPES.values(), HEARTBEAT_TYPE}


T = 1_795_674_254.548053


@pytest.mark.parametrize(
    ("item", "kind", "key"),
    [
        (Reading("living-room", "temperature", 21.5, T, T + 0.01, "C"), Kind.READING, "living-room"),
        (Reading("door", "open", True, T, T, None, clock_synced=False), Kind.READING, "door"),
        (Reading("plug", "state", "on", T, T), Kind.READING, "plug"),
        (Event(EventKind.FIRED, "hot", T, "warning", "too hot", {"living-room/temperature": 27.0}),
         Kind.RULE_FIRED, "rules/hot"),
        (Event(EventKind.CLEARED, "hot", T), Kind.RULE_CLEARED, "rules/hot"),
        (Event(EventKind.EMITTED, "hot", T, "critical"), Kind.RULE_EMITTED, "rules/hot"),
        (Event(EventKind.STALE, "boiler-silent", T), Kind.RULE_STALE, "rules/boiler-silent"),
        (Command("living-room/ac", {"state": "on", "target": 22}, "hot", T), Kind.COMMAND, "living-room"),
    ],
)  # fmt: skip
def test_items_encode_to_valid_cloudevents(item: Any, kind: Kind, key: str) -> None:
    got_kind, got_key, ts, data = encode_item(item)
    assert (got_kind, got_key, ts) == (kind, key, T)
    envelope = Envelope("gw-7", "abc123", {k: f"topic-{int(k)}" for k in Kind})
    msg = envelope.message(SpoolRow(42, got_kind, got_key, ts, data), 0)
    headers = dict(msg.headers)
    assert headers == {
        "ce_specversion": b"1.0",
        "ce_id": b"gw-7/abc123/42",
        "ce_source": f"edgegw://gw-7/{key}".encode(),
        "ce_type": CE_TYPES[kind].encode(),
        "ce_time": b"2026-11-26T06:24:14.548053Z",
        "content-type": b"application/json",
    }
    assert msg.key == key.encode()
    assert msg.topic == f"topic-{int(kind)}"
    validate(CE_TYPES[kind], json.loads(msg.value))


def test_heartbeat_envelope() -> None:
    envelope = Envelope("gw-7", "abc123", {})
    data = {
        "gateway_id": "gw-7", "ts": T, "uptime_s": 1.5, "mode": "exactly_once",
        "spool": {"depth": 1, "bytes": 200, "oldest_age_s": None, "dead_letters": 0, "dropped": {"cap": 2}},
        "uplink": {"shipped": 5, "reconnects": 0},
        "versions": {"edgegw": "0.1.0", "librdkafka": "2.16.0"},
    }  # fmt: skip
    msg = envelope.heartbeat("hb", data, T, 3)
    assert dict(msg.headers)["ce_type"] == b"edgegw.heartbeat.v1"
    assert dict(msg.headers)["ce_source"] == b"edgegw://gw-7"
    assert msg.key == b"gw-7"
    validate(HEARTBEAT_TYPE, json.loads(msg.value))


def test_a_row_of_unknown_kind_is_a_key_error() -> None:
    envelope = Envelope("gw", "s", {Kind.READING: "r"})
    with pytest.raises(KeyError):
        envelope.message(SpoolRow(1, 99, "x", T, b"{}"), 2)


def test_nan_is_not_json() -> None:
    for value, ts in ((float("nan"), T), (float("inf"), T), (1.0, float("-inf"))):
        with pytest.raises(ValueError, match="not a finite number"):
            encode_item(Reading("a", "t", value, ts, T))
    assert encode_item(Record(Kind.READING, "k", 1.0, b"{}")) == (Kind.READING, "k", 1.0, b"{}")


@pytest.mark.parametrize(
    ("ts", "text"),
    [
        (0.0, "1970-01-01T00:00:00.000000Z"),
        (T, "2026-11-26T06:24:14.548053Z"),
        (1.9999999, "1970-01-01T00:00:02.000000Z"),
    ],
)
def test_ce_time(ts: float, text: str) -> None:
    assert ce_time(ts) == text
