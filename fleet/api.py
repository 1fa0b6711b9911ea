"""The read side's queries: what ``/api/...`` answers, as plain dicts (no HTTP here)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from fleet.store import Reader

__all__ = ["Api", "NotFoundError"]

_SEVERITY_RANK = "CASE severity WHEN 'critical' THEN 0 WHEN 'error' THEN 1 WHEN 'warning' THEN 2 ELSE 3 END"


class NotFoundError(LookupError):
    """No such gateway (a 404)."""


def _json(text: str | None) -> Any:
    return None if text is None else orjson.loads(text)


def _time(value: str | None, default: float) -> float:
    """Epoch seconds or an ISO 8601 time (``2026-12-04T10:00:00Z``)."""
    if value is None or value == "":
        return default
    try:
        return float(value)
    except ValueError:
        from datetime import datetime  # noqa: PLC0415

        return datetime.fromisoformat(value).timestamp()


class Api:
    def __init__(self, reader: Reader, *, clock: Callable[[], float] = time.time) -> None:
        self.reader = reader
        self.clock = clock

    def gateways(self) -> list[dict[str, Any]]:
        rows = self.reader.rows(
            "SELECT g.gateway_id, g.online, g.since, g.last_heartbeat, g.version, g.mode, g.spool_depth, "
            "g.spool_bytes, g.spool_oldest_age_s, g.spool_dead_letters, g.shipped, g.uptime_s, "
            "g.deployment_version, g.deployment_state, g.bad_input, g.heartbeats, "
            "(SELECT COUNT(*) FROM devices d WHERE d.gateway_id = g.gateway_id) AS devices, "
            "(SELECT COUNT(*) FROM alarms a WHERE a.gateway_id = g.gateway_id AND a.active = 1) AS active_alarms "
            "FROM gateways g ORDER BY g.gateway_id"
        )
        for r in rows:
            r["online"] = bool(r["online"])
        return rows

    def gateway(self, gateway_id: str) -> dict[str, Any]:
        found = [g for g in self.gateways() if g["gateway_id"] == gateway_id]
        if not found:
            raise NotFoundError(gateway_id)
        out = found[0]
        out["devices"] = self.devices(gateway_id)
        out["rules"] = self.reader.rows(
            "SELECT rule_id, last_fired, last_cleared, last_emitted, severity, message, fires, "
            "(SELECT fires FROM rule_days d WHERE d.gateway_id = r.gateway_id AND d.rule_id = r.rule_id "
            "AND d.day = ?) AS fires_today FROM rules r WHERE gateway_id = ? ORDER BY rule_id",
            (time.strftime("%Y-%m-%d", time.gmtime(self.clock())), gateway_id),
        )
        out["commands"] = [
            {**c, "payload": _json(c["payload"])}
            for c in self.reader.rows(
                "SELECT actuator, payload, rule_id, ts, outcome, outcome_ts FROM commands "
                "WHERE gateway_id = ? ORDER BY actuator", (gateway_id,))
        ]  # fmt: skip
        out["events"] = [
            {**e, "online": bool(e["online"])}
            for e in self.reader.rows(
                "SELECT at, online, reason FROM gateway_events WHERE gateway_id = ? ORDER BY at DESC LIMIT 50",
                (gateway_id,))
        ]  # fmt: skip
        out["counts"] = {r["ce_type"]: r["n"] for r in self.reader.rows(
            "SELECT ce_type, n FROM type_counts WHERE gateway_id = ?", (gateway_id,))}  # fmt: skip
        return out

    def devices(self, gateway_id: str | None = None) -> list[dict[str, Any]]:
        where, params = ("WHERE gateway_id = ?", (gateway_id,)) if gateway_id else ("", ())
        now = self.clock()
        hour = int(now // 3600) * 3600
        devices = {
            (d["gateway_id"], d["device_id"]): {**d, "metrics": {}, "readings_this_hour": 0,
                                                 "readings_last_hour": 0, "spark": {}}
            for d in self.reader.rows(
                f"SELECT gateway_id, device_id, readings, last_seen, bad_input FROM devices {where} "
                "ORDER BY gateway_id, device_id", params)
        }  # fmt: skip
        for v in self.reader.rows(f"SELECT gateway_id, device_id, metric, value, unit, ts FROM last_values {where}",
                                  params):  # fmt: skip
            dev = devices.get((v["gateway_id"], v["device_id"]))
            if dev is not None:
                dev["metrics"][v["metric"]] = {"value": _json(v["value"]), "unit": v["unit"], "ts": v["ts"]}
        and_ = "AND" if where else "WHERE"
        for r in self.reader.rows(
            f"SELECT gateway_id, device_id, metric, hour, n, sum FROM rollups {where} {and_} hour >= ? "
            "ORDER BY hour", (*params, hour - 23 * 3600)):  # fmt: skip
            dev = devices.get((r["gateway_id"], r["device_id"]))
            if dev is None:
                continue
            dev["spark"].setdefault(r["metric"], []).append([r["hour"], r["sum"] / r["n"]])
            if r["hour"] == hour:
                dev["readings_this_hour"] += r["n"]
            elif r["hour"] == hour - 3600:
                dev["readings_last_hour"] += r["n"]
        return list(devices.values())

    def alarms(self) -> list[dict[str, Any]]:
        return [
            {k: v for k, v in a.items() if k != "vals"} | {"values": _json(a["vals"]), "active": True}
            for a in self.reader.rows(
                "SELECT gateway_id, rule_id, severity, message, vals, ts FROM alarms WHERE active = 1 "
                f"ORDER BY {_SEVERITY_RANK}, ts DESC")
        ]  # fmt: skip

    def rollups(self, query: Mapping[str, str]) -> list[dict[str, Any]]:
        sensor = query.get("sensor", "")
        parts = sensor.split("/")
        if len(parts) != 3:
            raise ValueError("sensor=<gateway>/<device>/<metric>")
        now = self.clock()
        start, end = _time(query.get("from"), now - 86400), _time(query.get("to"), now)
        rows = self.reader.rows(
            "SELECT hour, n, min, max, sum FROM rollups WHERE gateway_id = ? AND device_id = ? AND metric = ? "
            "AND hour >= ? AND hour <= ? ORDER BY hour",
            (*parts, int(start // 3600) * 3600, int(end)),
        )
        return [{"hour": r["hour"], "count": r["n"], "min": r["min"], "max": r["max"], "mean": r["sum"] / r["n"]}
                for r in rows]  # fmt: skip

    def dead_letters(self) -> dict[str, Any]:
        count = self.reader.rows("SELECT COUNT(*) AS n FROM dead_letters")[0]["n"]
        last = self.reader.rows(
            "SELECT topic, part, kafka_offset, ce_id, ce_type, reason FROM dead_letters "
            "ORDER BY topic, part, kafka_offset DESC LIMIT 50"
        )
        return {"count": count, "last": last}
