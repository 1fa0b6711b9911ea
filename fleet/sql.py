"""The read model's tables and the statements that write a :class:`Changes`, for SQLite
and PostgreSQL alike (the upsert syntax, ``INSERT ... ON CONFLICT``, is the same in both;
the statements are written with ``?`` and PostgreSQL's ``%s`` is put in by :func:`dialect`).

Every write is idempotent or ordered by event time: the last value of a sensor, a
gateway's heartbeat, an alarm and an actuator's last command change only for a newer
``ts``; counts add up deltas that the offsets in the same transaction make exactly once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from fleet.errors import StaleOffsetsError
from fleet.model import Changes

__all__ = ["TABLES", "Writer", "dialect"]

TABLES: dict[str, str] = {
    "offsets": "topic TEXT NOT NULL, part INTEGER NOT NULL, next_offset BIGINT NOT NULL, PRIMARY KEY (topic, part)",
    "high_water": "prefix TEXT NOT NULL, topic TEXT NOT NULL, msg_key TEXT NOT NULL, seq BIGINT NOT NULL, "
                  "PRIMARY KEY (prefix, topic, msg_key)",
    "seen_ids": "ce_id TEXT PRIMARY KEY",
    "gateways": "gateway_id TEXT PRIMARY KEY, last_heartbeat DOUBLE PRECISION, online INTEGER NOT NULL DEFAULT 0, "
                "since DOUBLE PRECISION, version TEXT, versions TEXT, mode TEXT, spool_depth BIGINT, "
                "spool_bytes BIGINT, spool_oldest_age_s DOUBLE PRECISION, spool_dead_letters BIGINT, "
                "spool_dropped TEXT, shipped BIGINT, reconnects BIGINT, uptime_s DOUBLE PRECISION, "
                "deployment_version TEXT, deployment_state TEXT, deployment_ts DOUBLE PRECISION, "
                "bad_input BIGINT, heartbeats BIGINT NOT NULL DEFAULT 0, hb_topic TEXT, hb_partition INTEGER",
    "gateway_events": "gateway_id TEXT NOT NULL, at DOUBLE PRECISION NOT NULL, online INTEGER NOT NULL, "
                      "reason TEXT NOT NULL, PRIMARY KEY (gateway_id, at, online)",
    "devices": "gateway_id TEXT NOT NULL, device_id TEXT NOT NULL, readings BIGINT NOT NULL, "
               "last_seen DOUBLE PRECISION NOT NULL, bad_input BIGINT, PRIMARY KEY (gateway_id, device_id)",
    "last_values": "gateway_id TEXT NOT NULL, device_id TEXT NOT NULL, metric TEXT NOT NULL, value TEXT NOT NULL, "
                   "unit TEXT, ts DOUBLE PRECISION NOT NULL, PRIMARY KEY (gateway_id, device_id, metric)",
    "rollups": "gateway_id TEXT NOT NULL, device_id TEXT NOT NULL, metric TEXT NOT NULL, hour BIGINT NOT NULL, "
               "n BIGINT NOT NULL, min DOUBLE PRECISION NOT NULL, max DOUBLE PRECISION NOT NULL, "
               "sum DOUBLE PRECISION NOT NULL, PRIMARY KEY (gateway_id, device_id, metric, hour)",
    "rules": "gateway_id TEXT NOT NULL, rule_id TEXT NOT NULL, last_fired DOUBLE PRECISION, "
             "last_cleared DOUBLE PRECISION, last_emitted DOUBLE PRECISION, severity TEXT, message TEXT, "
             "fires BIGINT NOT NULL, PRIMARY KEY (gateway_id, rule_id)",
    "rule_days": "gateway_id TEXT NOT NULL, rule_id TEXT NOT NULL, day TEXT NOT NULL, fires BIGINT NOT NULL, "
                 "PRIMARY KEY (gateway_id, rule_id, day)",
    "alarms": "gateway_id TEXT NOT NULL, rule_id TEXT NOT NULL, active INTEGER NOT NULL, severity TEXT NOT NULL, "
              "message TEXT NOT NULL, vals TEXT NOT NULL, ts DOUBLE PRECISION NOT NULL, "
              "PRIMARY KEY (gateway_id, rule_id)",
    "commands": "gateway_id TEXT NOT NULL, actuator TEXT NOT NULL, payload TEXT, rule_id TEXT, "
                "ts DOUBLE PRECISION, ce_id TEXT, outcome TEXT, outcome_ts DOUBLE PRECISION, "
                "PRIMARY KEY (gateway_id, actuator)",
    "type_counts": "gateway_id TEXT NOT NULL, ce_type TEXT NOT NULL, n BIGINT NOT NULL, "
                   "PRIMARY KEY (gateway_id, ce_type)",
    "dead_letters": "topic TEXT NOT NULL, part INTEGER NOT NULL, kafka_offset BIGINT NOT NULL, ce_id TEXT, "
                    "ce_type TEXT, reason TEXT NOT NULL, value TEXT NOT NULL, "
                    "PRIMARY KEY (topic, part, kafka_offset)",
}  # fmt: skip
VIEW_TABLES = tuple(t for t in TABLES if t not in ("offsets", "high_water", "seen_ids"))
"""The tables a person reads (the others are the consumer's bookkeeping)."""
INDEXES = ("CREATE INDEX IF NOT EXISTS rollups_hour ON rollups (hour)",)


def _newer(col: str, table: str) -> str:
    """The larger of the stored and the new value (NULL counts as older than anything)."""
    return (f"{col} = CASE WHEN {table}.{col} IS NULL OR excluded.{col} > {table}.{col} "
            f"THEN excluded.{col} ELSE {table}.{col} END")  # fmt: skip


_STATEMENTS: dict[str, str] = {
    "dead_letter": "INSERT INTO dead_letters (topic, part, kafka_offset, ce_id, ce_type, reason, value) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
    "beat": "INSERT INTO gateways (gateway_id, last_heartbeat, version, versions, mode, spool_depth, spool_bytes, "
            "spool_oldest_age_s, spool_dead_letters, spool_dropped, shipped, reconnects, uptime_s, "
            "deployment_version, bad_input, hb_topic, hb_partition, heartbeats) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (gateway_id) DO UPDATE SET "
            "heartbeats = gateways.heartbeats + excluded.heartbeats, last_heartbeat = excluded.last_heartbeat, "
            "version = excluded.version, versions = excluded.versions, mode = excluded.mode, "
            "spool_depth = excluded.spool_depth, spool_bytes = excluded.spool_bytes, "
            "spool_oldest_age_s = excluded.spool_oldest_age_s, spool_dead_letters = excluded.spool_dead_letters, "
            "spool_dropped = excluded.spool_dropped, shipped = excluded.shipped, "
            "reconnects = excluded.reconnects, uptime_s = excluded.uptime_s, "
            "deployment_version = COALESCE(excluded.deployment_version, gateways.deployment_version), "
            "bad_input = COALESCE(excluded.bad_input, gateways.bad_input), "
            "hb_topic = excluded.hb_topic, hb_partition = excluded.hb_partition",
    "transition": "INSERT INTO gateway_events (gateway_id, at, online, reason) VALUES (?, ?, ?, ?) "
                  "ON CONFLICT DO NOTHING",
    "state": "UPDATE gateways SET online = ?, since = ? WHERE gateway_id = ?",
    "deployment": "INSERT INTO gateways (gateway_id, deployment_version, deployment_state, deployment_ts) "
                  "VALUES (?, ?, ?, ?) ON CONFLICT (gateway_id) DO UPDATE SET "
                  "deployment_version = CASE WHEN excluded.deployment_state = 'applied' "
                  "THEN excluded.deployment_version ELSE gateways.deployment_version END, "
                  "deployment_state = excluded.deployment_state, deployment_ts = excluded.deployment_ts "
                  "WHERE gateways.deployment_ts IS NULL OR excluded.deployment_ts >= gateways.deployment_ts",
    "bad_input": "INSERT INTO devices (gateway_id, device_id, readings, last_seen, bad_input) VALUES (?, ?, 0, 0, ?) "
                 "ON CONFLICT (gateway_id, device_id) DO UPDATE SET bad_input = excluded.bad_input",
    "last_value": "INSERT INTO last_values (gateway_id, device_id, metric, value, unit, ts) VALUES (?, ?, ?, ?, ?, ?) "
                  "ON CONFLICT (gateway_id, device_id, metric) DO UPDATE SET value = excluded.value, "
                  "unit = excluded.unit, ts = excluded.ts WHERE excluded.ts >= last_values.ts",
    "device": "INSERT INTO devices (gateway_id, device_id, readings, last_seen) VALUES (?, ?, ?, ?) "
              "ON CONFLICT (gateway_id, device_id) DO UPDATE SET readings = devices.readings + excluded.readings, "
              + _newer("last_seen", "devices"),
    "rollup": "INSERT INTO rollups (gateway_id, device_id, metric, hour, n, min, max, sum) "
              "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (gateway_id, device_id, metric, hour) DO UPDATE SET "
              "n = rollups.n + excluded.n, sum = rollups.sum + excluded.sum, "
              "min = CASE WHEN excluded.min < rollups.min THEN excluded.min ELSE rollups.min END, "
              "max = CASE WHEN excluded.max > rollups.max THEN excluded.max ELSE rollups.max END",
    "rule": "INSERT INTO rules (gateway_id, rule_id, last_fired, last_cleared, last_emitted, severity, message, "
            "fires) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (gateway_id, rule_id) DO UPDATE SET "
            "fires = rules.fires + excluded.fires, " + _newer("last_fired", "rules") + ", "
            + _newer("last_cleared", "rules") + ", "
            "severity = CASE WHEN excluded.last_emitted IS NOT NULL AND (rules.last_emitted IS NULL OR "
            "excluded.last_emitted >= rules.last_emitted) THEN excluded.severity ELSE rules.severity END, "
            "message = CASE WHEN excluded.last_emitted IS NOT NULL AND (rules.last_emitted IS NULL OR "
            "excluded.last_emitted >= rules.last_emitted) THEN excluded.message ELSE rules.message END, "
            + _newer("last_emitted", "rules"),
    "rule_day": "INSERT INTO rule_days (gateway_id, rule_id, day, fires) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (gateway_id, rule_id, day) DO UPDATE SET fires = rule_days.fires + excluded.fires",
    "alarm_on": "INSERT INTO alarms (gateway_id, rule_id, active, severity, message, vals, ts) "
                "VALUES (?, ?, 1, ?, ?, ?, ?) ON CONFLICT (gateway_id, rule_id) DO UPDATE SET active = 1, "
                "severity = excluded.severity, message = excluded.message, vals = excluded.vals, ts = excluded.ts "
                "WHERE excluded.ts >= alarms.ts",
    "alarm_off": "UPDATE alarms SET active = 0, ts = ? WHERE gateway_id = ? AND rule_id = ? AND ts <= ?",
    "command": "INSERT INTO commands (gateway_id, actuator, payload, rule_id, ts, ce_id, outcome) "
               "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (gateway_id, actuator) DO UPDATE SET "
               "payload = excluded.payload, rule_id = excluded.rule_id, ts = excluded.ts, ce_id = excluded.ce_id, "
               "outcome = excluded.outcome, outcome_ts = NULL "
               "WHERE commands.ts IS NULL OR excluded.ts >= commands.ts",
    "outcome": "INSERT INTO commands (gateway_id, actuator, outcome, outcome_ts) VALUES (?, ?, ?, ?) "
               "ON CONFLICT (gateway_id, actuator) DO UPDATE SET outcome = excluded.outcome, "
               "outcome_ts = excluded.outcome_ts",
    "type_count": "INSERT INTO type_counts (gateway_id, ce_type, n) VALUES (?, ?, ?) "
                  "ON CONFLICT (gateway_id, ce_type) DO UPDATE SET n = type_counts.n + excluded.n",
    "high_water": "INSERT INTO high_water (prefix, topic, msg_key, seq) VALUES (?, ?, ?, ?) "
                  "ON CONFLICT (prefix, topic, msg_key) DO UPDATE SET seq = excluded.seq "
                  "WHERE excluded.seq > high_water.seq",
    "seen_id": "INSERT INTO seen_ids (ce_id) VALUES (?) ON CONFLICT DO NOTHING",
    "offset_new": "INSERT INTO offsets (topic, part, next_offset) VALUES (?, ?, ?)",
    "offset_move": "UPDATE offsets SET next_offset = ? WHERE topic = ? AND part = ? AND next_offset = ?",
}  # fmt: skip


def dialect(placeholder: str) -> dict[str, str]:
    """The statements with ``placeholder`` (``?`` for SQLite, ``%s`` for PostgreSQL)."""
    return {name: sql.replace("?", placeholder) for name, sql in _STATEMENTS.items()}


ExecuteMany = Callable[[str, Iterable[Sequence[Any]]], None]
Execute = Callable[[str, Sequence[Any]], int]
"""Runs one statement, returns the number of rows it changed."""


class Writer:
    """Writes a :class:`Changes` and a batch's offsets through a database's ``executemany``."""

    def __init__(self, statements: Mapping[str, str]) -> None:
        self.sql = dict(statements)

    def write(self, many: ExecuteMany, one: Execute, changes: Changes,
              offsets: Mapping[tuple[str, int], tuple[int | None, int]]) -> None:  # fmt: skip
        """Inside the caller's transaction. Raises :class:`StaleOffsetsError` when an offset
        moved since it was loaded (the caller rolls back)."""
        s = self.sql
        for (topic, part), (expected, new) in offsets.items():
            if expected is None:
                one(s["offset_new"], (topic, part, new))
            elif one(s["offset_move"], (new, topic, part, expected)) != 1:
                raise StaleOffsetsError(f"{topic}[{part}] moved past {expected} (another instance)")
        c = changes
        if c.dead_letters:
            many(s["dead_letter"], c.dead_letters)
        self._gateways(many, c)
        if c.last_values:
            many(s["last_value"], [(*k, *v) for k, v in c.last_values.items()])
        if c.devices:
            many(s["device"], [(*k, *v) for k, v in c.devices.items()])
        if c.rollups:
            many(s["rollup"], [(*k, *v) for k, v in c.rollups.items()])
        self._rules(many, c)
        if c.commands:
            many(s["command"], [(*k, *v) for k, v in c.commands.items()])
        if c.outcomes:
            many(s["outcome"], [(*k, *v) for k, v in c.outcomes.items()])
        if c.type_counts:
            many(s["type_count"], [(*k, n) for k, n in c.type_counts.items()])
        if c.high_water:
            many(s["high_water"], [(*k, n) for k, n in c.high_water.items()])
        if c.seen_ids:
            many(s["seen_id"], [(i,) for i in c.seen_ids])

    def _gateways(self, many: ExecuteMany, c: Changes) -> None:
        s = self.sql
        if c.beats:
            many(s["beat"], [(gw, *b[:13], b.bad_input, b.topic, b.partition, c.beat_counts.get(gw, 1))
                             for gw, b in c.beats.items()])  # fmt: skip
        if c.transitions:
            many(s["transition"], [(t.gateway_id, t.at, int(t.online), t.reason) for t in c.transitions])
            final = {t.gateway_id: t for t in c.transitions}
            many(s["state"], [(int(t.online), t.at, gw) for gw, t in final.items()])
        if c.deployments:
            many(s["deployment"], [(gw, *d) for gw, d in c.deployments.items()])
        if c.bad_input:
            many(s["bad_input"], [(*k, n) for k, n in c.bad_input.items()])

    def _rules(self, many: ExecuteMany, c: Changes) -> None:
        s = self.sql
        if c.rules:
            many(s["rule"], [(gw, rule, d.last_fired, d.last_cleared, d.last_emitted, d.severity, d.message, d.fires)
                             for (gw, rule), d in c.rules.items()])  # fmt: skip
        if c.fires_per_day:
            many(s["rule_day"], [(*k, n) for k, n in c.fires_per_day.items()])
        on = [(*k, a.severity, a.message, a.values, a.ts) for k, a in c.alarms.items() if a.active]
        off = [(a.ts, *k, a.ts) for k, a in c.alarms.items() if not a.active]
        if on:
            many(s["alarm_on"], on)
        if off:
            many(s["alarm_off"], off)
