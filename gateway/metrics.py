"""``/metrics`` (Prometheus text format) and ``/healthz`` (JSON) for a running gateway.

Nothing on the per-reading path touches prometheus-client: the runtime and its parts
keep plain counters, and :class:`RuntimeCollector` reads them when Prometheus scrapes.

``/healthz`` answers 200 when the local automation works (MQTT connected, spool
writable, the event loop alive) and 503 otherwise. The Kafka uplink is reported but
never makes the gateway unhealthy: rules and actuators run without it, and the spool
keeps what it cannot ship yet.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway import __version__

if TYPE_CHECKING:
    from bridge.spool import SpoolStats
    from gateway.http import Response
    from gateway.runtime import Runtime

__all__ = ["Observability", "RuntimeCollector", "health"]

_UPLINK_STATES = ("disabled", "starting", "connecting", "up", "backoff", "refused", "stopped")


def _counter(name: str, doc: str, labels: list[str], values: dict[Any, int] | dict[str, int]) -> Metric:
    family = CounterMetricFamily(name, doc, labels=labels)
    for key, value in values.items():
        family.add_metric(list(key) if isinstance(key, tuple) else [str(key)], value)
    return family


def _gauge(name: str, doc: str, value: float, labels: dict[str, str] | None = None) -> Metric:
    family = GaugeMetricFamily(name, doc, labels=list(labels or {}))
    family.add_metric(list((labels or {}).values()), value)
    return family


def _spool_families(s: SpoolStats) -> Iterator[Metric]:
    yield _gauge("edgegw_spool_depth", "Rows waiting in the spool", float(s.depth))
    yield _gauge("edgegw_spool_bytes", "Bytes of rows in the spool", float(s.bytes))
    yield _gauge("edgegw_spool_oldest_age_seconds", "Age of the oldest spooled row", s.oldest_age or 0.0)
    yield _counter("edgegw_spool_dropped", "Rows dropped by policy, per reason", ["reason"], dict(s.dropped))
    yield _gauge("edgegw_spool_dead_letters", "Rows Kafka refused for good", float(s.dead_letters))
    yield _gauge(
        "edgegw_spool_pending",
        "Items handed to the spool and not committed yet (held in memory)",
        float(s.pending),
    )
    yield CounterMetricFamily("edgegw_spool_committed_rows", "Rows committed", value=s.committed_rows)
    if s.durable_ms_p99 is not None:
        yield _gauge("edgegw_spool_durable_p99_ms", "Submit to commit, p99 (recent groups)", s.durable_ms_p99)


class RuntimeCollector(Collector):
    """Reads the runtime's counters at scrape time."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[Metric]:
        rt = self.runtime
        st = rt.state
        mono = time.monotonic()
        info = GaugeMetricFamily(
            "edgegw_info", "Gateway build and identity", labels=["version", "gateway_id"]
        )
        info.add_metric([__version__, rt.gateway_id], 1)
        yield info
        profiles = {d.id: d.profile for d in rt.config.devices}
        yield _counter(
            "edgegw_readings",
            "Readings accepted, per device and payload profile",
            ["device", "profile"],
            {(dev, profiles.get(dev, "unknown")): n for dev, n in st.readings.items()},
        )
        yield _counter(
            "edgegw_parse_errors",
            "Bad input dropped, per device and reason",
            ["device", "reason"],
            dict(rt.counter.counts),
        )
        online = GaugeMetricFamily(
            "edgegw_device_online", "1 when the device reported recently", labels=["device"]
        )
        for device in profiles:
            online.add_metric([device], 1.0 if str(rt.health.state(device, mono)) == "online" else 0.0)
        yield online
        es = rt.engine.stats
        yield _gauge("edgegw_rules", "Rules loaded", float(len(rt.engine.rules)))
        yield CounterMetricFamily(
            "edgegw_rule_evaluations", "Readings evaluated by the rules engine", value=es.readings
        )
        yield _counter("edgegw_rule_fires", "Rule fires, per rule", ["rule"], dict(st.fires))
        yield CounterMetricFamily("edgegw_rule_clears", "Rule clears", value=es.clears)
        blocked = CounterMetricFamily("edgegw_rule_blocked", "Fires dropped, per reason", labels=["reason"])
        blocked.add_metric(["cooldown"], es.blocked_by_cooldown)
        blocked.add_metric(["guard"], es.blocked_by_guard)
        blocked.add_metric(["loop_guard"], es.loop_guard_trips)
        yield blocked
        yield CounterMetricFamily(
            "edgegw_rule_bad_readings", "Readings a rule could not compare", value=es.bad_readings
        )
        acts = rt.actuators
        yield _counter("edgegw_commands_sent", "Commands sent, per actuator", ["actuator"], dict(acts.sent))
        yield _counter("edgegw_commands_failed", "Commands not delivered", ["actuator"], dict(acts.failed))
        yield _counter(
            "edgegw_commands_confirmed", "Commands confirmed by read-back", ["actuator"], dict(acts.confirmed)
        )
        yield _counter(
            "edgegw_commands_unconfirmed",
            "Commands not confirmed in time",
            ["actuator"],
            dict(acts.unconfirmed),
        )
        if rt.spool is not None:
            yield from _spool_families(rt.spool.stats())
        fw = rt.forwarder.stats() if rt.forwarder is not None else None
        state = fw.state if fw is not None else "disabled"
        up = GaugeMetricFamily(
            "edgegw_uplink_state", "Kafka uplink state (1 for the current one)", labels=["state"]
        )
        for name in _UPLINK_STATES:
            up.add_metric([name], 1.0 if name == state else 0.0)
        yield up
        if fw is not None:
            yield CounterMetricFamily("edgegw_forwarder_sent", "Events shipped to Kafka", value=fw.shipped)
            yield CounterMetricFamily(
                "edgegw_forwarder_retries", "Uplink reconnects", value=max(0, fw.reconnects - 1)
            )
            yield CounterMetricFamily(
                "edgegw_forwarder_dead_lettered", "Events moved to dead letters", value=fw.dead_lettered
            )
            yield CounterMetricFamily(
                "edgegw_forwarder_yields",
                "Backlog rounds followed by a pause because the event loop ran late",
                value=fw.yields,
            )
        yield CounterMetricFamily(
            "edgegw_loop_late_ticks",
            "Event loop wakeups more than 2 ms late while mostly idle",
            value=st.late_ticks,
        )
        yield CounterMetricFamily(
            "edgegw_mqtt_holds", "MQTT reading paused until the spool writer caught up", value=st.holds
        )
        yield _counter("edgegw_component_restarts", "Component restarts", ["component"], dict(st.restarts))
        if st.ready_mono is not None:
            yield _gauge("edgegw_ready_seconds", "Time from start to READY", st.ready_mono - st.started_mono)


def health(runtime: Runtime) -> tuple[bool, dict[str, Any]]:
    """Each component's state, and whether the local automation works."""
    rt = runtime
    components: dict[str, Any] = {}
    healthy = rt.ready
    if rt.mqtt_source is not None:
        ok = bool(rt.mqtt_source.link.connected)
        components["mqtt_source"] = {"state": "connected" if ok else "disconnected"}
        healthy &= ok
    if rt.command_link is not None:
        ok = bool(rt.command_link.link.connected)
        components["mqtt_actuators"] = {"state": "connected" if ok else "disconnected"}
        healthy &= ok
    if rt.spool is not None:
        s = rt.spool.stats()
        components["spool"] = {
            "state": "failed" if s.failed else "ok",
            "depth": s.depth,
            "bytes": s.bytes,
            "oldest_age_s": None if s.oldest_age is None else round(s.oldest_age, 3),
            "error": s.failed,
        }
        healthy &= s.failed is None
    fw = rt.forwarder.stats() if rt.forwarder is not None else None
    components["uplink"] = (
        {"state": "disabled"}
        if fw is None
        else {
            "state": fw.state,
            "backlog_rows": fw.backlog_rows,
            "shipped": fw.shipped,
            "error": fw.last_error,
        }
    )
    mono = time.monotonic()
    offline = [d.id for d in rt.config.devices if str(rt.health.state(d.id, mono)) == "offline"]
    components["devices"] = {"configured": len(rt.config.devices), "offline": offline}
    components["rules"] = {"loaded": len(rt.engine.rules), "reload_errors": rt.state.reload_errors}
    body = {
        "status": "ok" if healthy else "unhealthy",
        "gateway_id": rt.gateway_id,
        "version": __version__,
        "ready": rt.ready,
        "components": components,
    }
    return healthy, body


class Observability:
    """The HTTP handlers: ``metrics()`` and ``healthz()`` return ``(status, type, body)``."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(RuntimeCollector(runtime))
        self.registry.register(ProcessCollector(registry=None))

    def metrics(self) -> Response:
        return 200, "text/plain; version=0.0.4; charset=utf-8", generate_latest(self.registry)

    def rules(self) -> Response:
        """Every rule's trace (``edgegw rules explain`` reads it)."""
        body = json.dumps(self.runtime.engine.traces(), default=str, indent=1)
        return 200, "application/json", body.encode()

    def healthz(self) -> Response:
        ok, body = health(self.runtime)
        return (200 if ok else 503), "application/json", (json.dumps(body, indent=2) + "\n").encode()
