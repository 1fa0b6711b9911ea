"""Every outcome of a deployment or a command as a spool record (a CloudEvent once shipped).

They go through the spool like any event, so they survive an outage of the uplink:
``edgegw.deployment.applied.v1``, ``.rejected.v1``, ``.rolled_back.v1`` (key
``deployment``) and ``edgegw.command.result.v1`` (key ``commands/<actuator>``); the
JSON Schemas are in ``schemas/events/``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

from bridge.envelope import Record
from bridge.policy import Kind
from gateway.errors import ConfigIssue

__all__ = ["applied", "command_result", "rejected", "rolled_back"]

CommandStatus = Literal["sent", "confirmed", "failed", "refused", "expired"]


def _record(kind: Kind, key: str, ts: float, data: dict[str, Any]) -> Record:
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return Record(kind, key, ts, text.encode())


def _base(gateway_id: str, source: str, version: int | None, digest: str, ts: float) -> dict[str, Any]:
    return {"gateway_id": gateway_id, "source": source, "version": version, "digest": digest, "ts": ts}


def applied(
    gateway_id: str,
    *,
    source: str,
    version: int,
    digest: str,
    sections: Sequence[str],
    settle_s: float,
    ts: float,
) -> Record:
    data = _base(gateway_id, source, version, digest, ts) | {"sections": list(sections), "settle_s": settle_s}
    return _record(Kind.DEPLOYMENT_APPLIED, "deployment", ts, data)


def rejected(
    gateway_id: str,
    *,
    source: str,
    version: int | None,
    digest: str,
    issues: Sequence[ConfigIssue],
    ts: float,
) -> Record:
    errors = [
        {
            "message": i.message,
            "file": i.file,
            "line": i.line,
            "column": i.column,
            "path": i.path,
            "text": str(i),
        }
        for i in issues[:50]
    ]
    data = _base(gateway_id, source, version, digest, ts) | {"errors": errors}
    return _record(Kind.DEPLOYMENT_REJECTED, "deployment", ts, data)


def rolled_back(
    gateway_id: str,
    *,
    source: str,
    version: int,
    digest: str,
    reason: str,
    restored_version: int | None,
    ts: float,
) -> Record:
    data = _base(gateway_id, source, version, digest, ts) | {
        "reason": reason,
        "restored_version": restored_version,
    }
    return _record(Kind.DEPLOYMENT_ROLLED_BACK, "deployment", ts, data)


def command_result(
    gateway_id: str,
    *,
    source: str,
    command_id: str | None,
    actuator: str | None,
    status: CommandStatus,
    reason: str,
    ts: float,
) -> Record:
    data = {
        "gateway_id": gateway_id,
        "source": source,
        "command_id": command_id,
        "actuator": actuator,
        "status": status,
        "reason": reason,
        "ts": ts,
    }
    return _record(Kind.COMMAND_RESULT, f"commands/{actuator or '-'}", ts, data)
