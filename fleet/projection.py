"""The projection core: Kafka records in, read-model changes out. No I/O, time passed in.

``Projector.apply(records) -> Changes`` folds a batch; ``Projector.tick(now, owned)``
turns a silent gateway offline. What it guarantees:

- every record is validated against its ``ce_type``'s schema; a record with a missing
  header, a value that is not JSON, an unknown type or an invalid ``data`` becomes a
  :class:`DeadLetter` with the reason, and the batch goes on;
- idempotent per ``ce_id``: edgegw's ids end in the spool sequence
  (``<gateway>/<spool-id>/<seq>``) and a device's records reach a topic in spool order,
  so the highest sequence per (id prefix, topic, key) is all it remembers to drop a
  record projected before (an at-least-once redelivery); other ids are remembered
  whole; a heartbeat counts only when it is newer than the last one;
- offline and online are events of their own, timed by the heartbeats (offline at the
  last heartbeat + the offline delay, online at the next heartbeat), so a rebuild from
  the log finds the same outages the live view saw, also those it was down for.
"""

from __future__ import annotations

import time
from collections.abc import Container, Iterable, Mapping, Sequence
from typing import Any

import orjson

from fleet.model import (
    Alarm,
    Changes,
    CommandRow,
    DeadLetter,
    GatewayBeat,
    GatewaySeen,
    Incoming,
    LastValue,
    RuleDelta,
    Transition,
)
from fleet.schemas import Validators

__all__ = ["ALARM_SEVERITIES", "Projector"]

ALARM_SEVERITIES = frozenset({"warning", "error", "critical"})
READING = "edgegw.reading.v1"
HEARTBEAT = "edgegw.heartbeat.v1"
_SOURCE_PREFIX = "edgegw://"
_RULE_FIELD = {
    "edgegw.rule.fired.v1": "fired",
    "edgegw.rule.cleared.v1": "cleared",
    "edgegw.rule.emitted.v1": "emitted",
    "edgegw.rule.stale.v1": "stale",
}
_loads = orjson.loads
_dumps = orjson.dumps


def _text(raw: bytes | None) -> str | None:
    return None if raw is None else raw.decode("utf-8", "replace")


def _day(ts: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ts))


class Projector:
    """Folds batches of records into :class:`Changes`; remembers what dedup and offline need."""

    def __init__(self, validators: Validators, *, offline_after: float) -> None:
        self.validators = validators
        self.offline_after = offline_after
        self.high_water: dict[tuple[str, str, str], int] = {}
        self.seen_ids: set[str] = set()
        self.gateways: dict[str, GatewaySeen] = {}
        self._gw_of_source: dict[bytes, str | None] = {}

    # ------------------------------------------------------------------ state
    def load(
        self,
        high_water: Mapping[tuple[str, str, str], int],
        seen_ids: Iterable[str],
        gateways: Mapping[str, GatewaySeen],
    ) -> None:
        """Forget everything and take the store's state (at start and on every assignment)."""
        self.high_water = dict(high_water)
        self.seen_ids = set(seen_ids)
        self.gateways = dict(gateways)

    # ------------------------------------------------------------------ apply
    def apply(self, records: Sequence[Incoming]) -> Changes:
        changes = Changes()
        for rec in records:
            reason = self._one(rec, changes)
            if reason is not None:
                changes.dead_letters.append(
                    DeadLetter(rec.topic, rec.partition, rec.offset, _text(rec.ce_id), _text(rec.ce_type),
                               reason, (_text(rec.value) or "")[:2000])
                )  # fmt: skip
        return changes

    def _gateway(self, source: bytes) -> str | None:
        try:
            return self._gw_of_source[source]
        except KeyError:
            pass
        text = source.decode("utf-8", "replace")
        gw = text[len(_SOURCE_PREFIX) :].partition("/")[0] if text.startswith(_SOURCE_PREFIX) else ""
        result = gw or None
        if len(self._gw_of_source) > 100_000:
            self._gw_of_source.clear()
        self._gw_of_source[source] = result
        return result

    def _one(self, rec: Incoming, changes: Changes) -> str | None:  # noqa: PLR0911 - one exit per reason
        if rec.ce_type is None or rec.ce_id is None or rec.ce_source is None:
            missing = [n for n, v in (("ce_id", rec.ce_id), ("ce_type", rec.ce_type),
                                      ("ce_source", rec.ce_source)) if v is None]  # fmt: skip
            return f"missing header {', '.join(missing)}"
        ce_type = rec.ce_type.decode("utf-8", "replace")
        gw = self._gateway(rec.ce_source)
        if gw is None:
            return f"ce_source {rec.ce_source.decode('utf-8', 'replace')!r} is not edgegw://<gateway>/..."
        if rec.value is None:
            return "no value"
        try:
            data = _loads(rec.value)
        except orjson.JSONDecodeError as exc:
            return f"malformed JSON: {exc}"
        problem = self.validators.check(ce_type, data)
        if problem is not None:
            return problem
        if ce_type == HEARTBEAT:
            self._heartbeat(gw, data, rec, changes)
        elif not self._first_time(rec, changes):
            changes.duplicates += 1
            return None
        elif ce_type == READING:
            self._reading(gw, data, changes)
        elif ce_type in _RULE_FIELD:
            self._rule(gw, _RULE_FIELD[ce_type], data, changes)
        elif ce_type == "edgegw.command.v1":
            self._command(gw, data, rec.ce_id.decode(), changes)
        elif ce_type.startswith("edgegw.command.result."):
            self._command_result(gw, data, changes)
        elif ce_type.startswith("edgegw.deployment."):
            version = data.get("version")
            state = ce_type.split(".")[2]
            changes.deployments[gw] = (str(version), state, float(data.get("ts", 0.0)))
        key = (gw, ce_type)
        counts = changes.type_counts
        counts[key] = counts.get(key, 0) + 1
        return None

    def _first_time(self, rec: Incoming, changes: Changes) -> bool:
        """False when this record was projected before (its ``ce_id`` says so)."""
        ce_id = rec.ce_id or b""
        prefix, _, tail = ce_id.rpartition(b"/")
        if prefix and tail.isdigit():
            stream = (prefix.decode(), rec.topic, _text(rec.key) or "")
            seq = int(tail)
            if seq <= self.high_water.get(stream, -1):
                return False
            self.high_water[stream] = changes.high_water[stream] = seq
            return True
        text = ce_id.decode("utf-8", "replace")
        if text in self.seen_ids:
            return False
        self.seen_ids.add(text)
        changes.seen_ids.append(text)
        return True

    # ------------------------------------------------------------------ kinds
    @staticmethod
    def _reading(gw: str, data: dict[str, Any], changes: Changes) -> None:
        device = data["device_id"]
        metric = data["metric"]
        value = data["value"]
        ts = data["ts"]
        sensor = (gw, device, metric)
        last = changes.last_values.get(sensor)
        if last is None or ts >= last.ts:
            changes.last_values[sensor] = LastValue(_dumps(value).decode(), data["unit"], ts)
        dev = changes.devices.get((gw, device))
        if dev is None:
            changes.devices[(gw, device)] = [1, ts]
        else:
            dev[0] += 1
            dev[1] = max(dev[1], ts)
        if type(value) is float or type(value) is int:
            hour = int(ts // 3600) * 3600
            roll = changes.rollups.get((gw, device, metric, hour))
            if roll is None:
                changes.rollups[(gw, device, metric, hour)] = [1, value, value, value]
            else:
                roll[0] += 1
                roll[1] = min(roll[1], value)
                roll[2] = max(roll[2], value)
                roll[3] += value

    @staticmethod
    def _rule(gw: str, kind: str, data: dict[str, Any], changes: Changes) -> None:
        rule_id, ts, severity = data["rule_id"], data["ts"], data["severity"]
        delta = changes.rules.get((gw, rule_id))
        if delta is None:
            delta = changes.rules[(gw, rule_id)] = RuleDelta()
        if kind == "fired":
            delta.fires += 1
            delta.last_fired = max(ts, delta.last_fired or ts)
            day = (gw, rule_id, _day(ts))
            changes.fires_per_day[day] = changes.fires_per_day.get(day, 0) + 1
        elif kind == "cleared":
            delta.last_cleared = max(ts, delta.last_cleared or ts)
            changes.alarms[(gw, rule_id)] = Alarm(False, severity, data["message"],
                                                  _dumps(data["values"]).decode(), ts)  # fmt: skip
        elif kind == "emitted":
            delta.last_emitted = max(ts, delta.last_emitted or ts)
            delta.severity, delta.message = severity, data["message"]
            if severity in ALARM_SEVERITIES:
                changes.alarms[(gw, rule_id)] = Alarm(True, severity, data["message"],
                                                      _dumps(data["values"]).decode(), ts)  # fmt: skip

    @staticmethod
    def _command(gw: str, data: dict[str, Any], ce_id: str, changes: Changes) -> None:
        key = (gw, data["actuator"])
        last = changes.commands.get(key)
        if last is None or data["ts"] >= last.ts:
            changes.commands[key] = CommandRow(_dumps(data["payload"]).decode(), data["rule_id"],
                                               data["ts"], ce_id, "sent")  # fmt: skip

    @staticmethod
    def _command_result(gw: str, data: dict[str, Any], changes: Changes) -> None:
        actuator = data.get("actuator")  # null for a command refused before its actuator was known
        if isinstance(actuator, str):
            changes.outcomes[(gw, actuator)] = (str(data["status"]), float(data["ts"]))

    def _heartbeat(self, gw: str, data: dict[str, Any], rec: Incoming, changes: Changes) -> None:
        ts = float(data["ts"])
        seen = self.gateways.get(gw)
        if seen is not None and ts <= seen.last_heartbeat:
            changes.duplicates += 1  # a redelivered or older heartbeat tells nothing new
            return
        if seen is None:
            changes.transitions.append(Transition(gw, True, ts, "first heartbeat"))
            seen = self.gateways[gw] = GatewaySeen(ts, True, rec.topic, rec.partition)
        else:
            if seen.online and ts - seen.last_heartbeat > self.offline_after:
                changes.transitions.append(Transition(gw, False, seen.last_heartbeat + self.offline_after,
                                                      "no heartbeat"))  # fmt: skip
                seen.online = False
            if not seen.online:
                changes.transitions.append(Transition(gw, True, ts, "heartbeat"))
                seen.online = True
            seen.last_heartbeat, seen.topic, seen.partition = ts, rec.topic, rec.partition
        spool = data["spool"]
        versions = data["versions"]
        deployment = (data.get("deployment") or {}).get("version")  # optional: gateways with cloud: on
        bad = data.get("bad_input")  # {device: count} or {device: {reason: count}}, when reported
        bad_total = None
        if isinstance(bad, dict):
            for device, n in bad.items():
                changes.bad_input[(gw, device)] = sum(n.values()) if isinstance(n, dict) else int(n)
            bad_total = sum(v for (g, _), v in changes.bad_input.items() if g == gw)
        changes.beats[gw] = GatewayBeat(
            ts=ts, version=versions.get("edgegw"), versions=_dumps(versions).decode(), mode=data["mode"],
            spool_depth=spool["depth"], spool_bytes=spool["bytes"], spool_oldest_age_s=spool["oldest_age_s"],
            spool_dead_letters=spool["dead_letters"], spool_dropped=_dumps(spool["dropped"]).decode(),
            shipped=data["uplink"]["shipped"], reconnects=data["uplink"]["reconnects"],
            uptime_s=data["uptime_s"], deployment_version=None if deployment is None else str(deployment),
            bad_input=bad_total, topic=rec.topic, partition=rec.partition,
        )  # fmt: skip
        changes.beat_counts[gw] = changes.beat_counts.get(gw, 0) + 1
        key = (gw, HEARTBEAT)
        changes.type_counts[key] = changes.type_counts.get(key, 0) + 1

    # ------------------------------------------------------------------ time
    def tick(self, now: float, owned: Container[tuple[str, int]], changes: Changes | None = None) -> Changes:
        """Gateways whose heartbeat partition this instance owns and that have been silent for
        the offline delay go offline (timed at their last heartbeat + the delay)."""
        out = Changes() if changes is None else changes
        for gw, seen in self.gateways.items():
            if (seen.online and now - seen.last_heartbeat >= self.offline_after
                    and (seen.topic, seen.partition) in owned):  # fmt: skip
                seen.online = False
                out.transitions.append(Transition(gw, False, seen.last_heartbeat + self.offline_after,
                                                  "no heartbeat"))  # fmt: skip
        return out
