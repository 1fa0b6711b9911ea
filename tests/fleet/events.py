"""CloudEvents records as edgegw writes them to Kafka, for the fleet view's tests and bench."""

from __future__ import annotations

from typing import Any

import orjson

from fleet.model import Incoming

__all__ = ["beat", "command", "reading", "record", "rule"]


def record(
    ce_type: str,
    data: Any,
    *,
    gateway: str = "gw1",
    key: str = "dev",
    seq: int | None = 1,
    ce_id: str | None = None,
    topic: str = "edgegw.readings",
    partition: int = 0,
    offset: int = 0,
) -> Incoming:
    cid = ce_id if ce_id is not None else f"{gateway}/spool1/{seq}"
    source = f"edgegw://{gateway}" if ce_type == "edgegw.heartbeat.v1" else f"edgegw://{gateway}/{key}"
    value = data if isinstance(data, bytes) else orjson.dumps(data)
    return Incoming(
        topic, partition, offset, key.encode(), value, cid.encode(), ce_type.encode(), source.encode()
    )


def reading(
    device: str,
    value: Any,
    ts: float,
    *,
    metric: str = "temperature",
    seq: int = 1,
    gateway: str = "gw1",
    offset: int = 0,
) -> Incoming:
    data = {
        "device_id": device,
        "metric": metric,
        "value": value,
        "unit": "C",
        "ts": ts,
        "received_at": ts,
        "clock_synced": True,
    }
    return record("edgegw.reading.v1", data, gateway=gateway, key=device, seq=seq, offset=offset)


def rule(
    kind: str, rule_id: str, ts: float, *, severity: str = "info", seq: int = 1, gateway: str = "gw1"
) -> Incoming:
    data = {
        "rule_id": rule_id,
        "kind": kind,
        "severity": severity,
        "message": f"{rule_id} {kind}",
        "values": {"t1/temperature": 30.0},
        "ts": ts,
    }
    return record(
        f"edgegw.rule.{kind}.v1",
        data,
        gateway=gateway,
        key=f"rules/{rule_id}",
        seq=seq,
        topic="edgegw.events",
    )


def command(
    actuator: str, payload: dict[str, Any], ts: float, *, seq: int = 1, gateway: str = "gw1"
) -> Incoming:
    data = {"actuator": actuator, "payload": payload, "rule_id": "r1", "ts": ts}
    return record(
        "edgegw.command.v1",
        data,
        gateway=gateway,
        key=actuator.split("/", maxsplit=1)[0],
        seq=seq,
        topic="edgegw.commands",
    )


def beat(
    ts: float, *, gateway: str = "gw1", depth: int = 0, partition: int = 0, beat_no: int = 1
) -> Incoming:
    data = {
        "gateway_id": gateway,
        "ts": ts,
        "uptime_s": 10.0,
        "mode": "exactly_once",
        "spool": {"depth": depth, "bytes": 0, "oldest_age_s": None, "dead_letters": 0, "dropped": {}},
        "uplink": {"shipped": 5, "reconnects": 0},
        "versions": {"edgegw": "0.1.0"},
    }
    return record(
        "edgegw.heartbeat.v1",
        data,
        gateway=gateway,
        key=gateway,
        ce_id=f"{gateway}/spool1/hb/{int(ts * 1000)}-{beat_no}",
        topic="edgegw.heartbeats",
        partition=partition,
    )
