"""The HTTP handlers of the status page: ``/`` (the page) and ``/api/status`` (its JSON).

``/api/status`` copies the runtime's counters on the event loop (dictionary reads: the
hot path only ever updates them), reads the spool's and the uplink's stats off the loop
(:meth:`gateway.metrics.Observability.io_stats`, the same read ``/metrics`` shares) and
builds and encodes the document in a worker thread. The page is one static file,
``gateway/status/page.html`` (inline CSS and JavaScript, no asset from anywhere else),
read once, at the first request.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import asdict
from importlib import resources
from typing import TYPE_CHECKING, Any

from gateway import __version__
from gateway.status.snapshot import ActuatorView, DeviceView, LinkView, RuleView, StatusInputs, build_status

if TYPE_CHECKING:
    from gateway.http import Response
    from gateway.metrics import IoStats, Observability
    from gateway.runtime import Runtime

__all__ = ["PAGE_HEADERS", "StatusPage", "gather"]

PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
"""Nothing but the gateway itself: the page could not load an outside asset if it tried."""


def _fingerprint(rt: Runtime) -> str:
    return hashlib.sha256(rt.config.model_dump_json().encode()).hexdigest()[:12]


def _links(rt: Runtime, io: IoStats) -> dict[str, LinkView]:
    links: dict[str, LinkView] = {}
    for name, part in (("mqtt", rt.mqtt_source), ("mqtt_actuators", rt.command_link),
                       ("homeassistant", rt.homeassistant)):  # fmt: skip
        if part is not None:
            link = part.link
            links[name] = LinkView(bool(link.connected), "up" if link.connected else "down", link.since)
    fw = io.forwarder
    if fw is None:
        links["kafka"] = LinkView(None, "disabled")
    else:
        links["kafka"] = LinkView(fw.state == "up", fw.state, fw.state_since, fw.last_error)
    return links


def _devices(rt: Runtime, mono: float) -> list[DeviceView]:
    values: dict[str, dict[str, tuple[Any, float]]] = {}
    for sensor, value in list(rt.state.last_values.items()):
        device, _, metric = sensor.partition("/")
        values.setdefault(device, {})[metric] = value
    bad: dict[str, dict[str, int]] = {}
    for (device, reason), count in list(rt.counter.counts.items()):
        bad.setdefault(device, {})[reason] = count
    for (device, reason), count in list(rt.state.poison.items()):  # rule errors are in both: never twice
        reasons = bad.setdefault(device, {})
        reasons[reason] = max(reasons.get(reason, 0), count)
    out = []
    for cfg in rt.config.devices:
        try:
            health = rt.health.get(cfg.id)
            state = str(rt.health.state(cfg.id, mono))
        except KeyError:  # a reload is replacing the device components
            continue
        out.append(DeviceView(cfg.id, cfg.profile, cfg.transport, state, health.last_seen_wall,
                              health.messages, values.get(cfg.id, {}), bad.get(cfg.id, {})))  # fmt: skip
    return out


def _rules(rt: Runtime, mono: float, wall: float) -> list[RuleView]:
    from rules.compiler import EmitAct  # noqa: PLC0415

    def to_wall(at: float | None) -> float | None:
        return None if at is None else wall - (mono - at)

    engine = rt.engine
    out = []
    for rule in engine.rules:
        last = rule.last_fire
        devices = tuple(sorted({leaf.sensor.partition("/")[0] for leaf in rule.when_leaves}))
        out.append(RuleView(
            id=rule.id, description=rule.description or "", fired=rule.fired, met=rule.met,
            blocked=rule.blocked, waiting_until=to_wall(rule.pending_due),
            cooldown_until=None if last is None or not rule.cooldown else to_wall(last + rule.cooldown),
            last_fired=to_wall(last), failsafe_active=rule.failsafe_active, devices=devices,
            fires=rt.state.fires.get(rule.id, 0), trace=engine.trace(rule.id),
            emits=any(isinstance(a, EmitAct) for a in rule.then),
        ))  # fmt: skip
    return out


def _actuators(rt: Runtime) -> list[ActuatorView]:
    acts = rt.actuators
    out = []
    for cfg in rt.config.actuators:
        command = rt.state.last_commands.get(cfg.id)
        out.append(ActuatorView(
            cfg.id, cfg.profile, cfg.transport,
            None if command is None else dict(command.payload), None if command is None else command.ts,
            None if command is None else command.rule_id, acts.outcome.get(cfg.id),
            acts.sent.get(cfg.id, 0), acts.failed.get(cfg.id, 0), acts.confirmed.get(cfg.id, 0),
            acts.unconfirmed.get(cfg.id, 0),
        ))  # fmt: skip
    return out


def _deployment(rt: Runtime) -> str | None:
    """The deployment running (``cloud:``), e.g. ``v8 from group/ground-floor``; None: the local file."""
    cloud = rt.cloud
    if cloud is None:
        return None
    if cloud.settling is not None:
        return f"v{cloud.settling.version} from {cloud.settling.source} (settling)"
    good = cloud.state.last_good
    return None if good is None else f"v{good.version} from {good.source}"


def gather(rt: Runtime, io: IoStats, *, healthy: bool, fingerprint: str) -> StatusInputs:
    """Copy what the page shows out of the runtime. On the event loop: reads only."""
    mono, wall = time.monotonic(), time.time()
    spool = None
    if io.spool is not None:
        s = io.spool
        spool = {"depth": s.depth, "bytes": s.bytes, "oldest_age_s": s.oldest_age,
                 "dead_letters": s.dead_letters, "failed": s.failed, "disk_full": s.disk_full,
                 "readings_shed": sum(rt.state.shed.values())}  # fmt: skip
    deployment = _deployment(rt)
    events = [
        {"at": e.ts, "kind": str(e.kind), "rule": e.rule_id, "severity": e.severity, "message": e.message,
         "values": dict(e.values)}
        for e in list(rt.state.rule_events)
    ]
    bad_lines = [
        {"at": at, "device": device, "reason": reason, "detail": detail, "suppressed": suppressed}
        for at, device, reason, detail, suppressed in list(rt.counter.recent)
    ]
    return StatusInputs(
        gateway_id=rt.gateway_id,
        version=__version__,
        now=wall,
        started=wall - (mono - rt.state.started_mono),
        config={"path": str(rt.loaded.path), "fingerprint": fingerprint, "reloads": rt.state.reloads,
                "deployment": deployment},
        links=_links(rt, io),
        spool=spool,
        clock_synced=bool(rt.clock.synchronized),
        healthy=healthy,
        devices=_devices(rt, mono),
        rules=_rules(rt, mono, wall),
        actuators=_actuators(rt),
        events=events,
        bad_input=bad_lines,
        uplink=None if io.uplink is None else asdict(io.uplink),  # as /healthz shows it
    )


def _encode(inputs: StatusInputs) -> bytes:
    return json.dumps(build_status(inputs), default=str, separators=(",", ":")).encode()


class StatusPage:
    """``page()`` for ``/``, ``api()`` for ``/api/status``."""

    def __init__(self, runtime: Runtime, observability: Observability) -> None:
        self.runtime = runtime
        self.obs = observability
        self._html: bytes | None = None
        self._fingerprint: tuple[object, str] | None = None

    def page(self) -> Response:
        if self._html is None:
            self._html = resources.files("gateway.status").joinpath("page.html").read_bytes()
        return 200, "text/html; charset=utf-8", self._html

    def _config_fingerprint(self) -> str:
        rt = self.runtime
        if self._fingerprint is None or self._fingerprint[0] is not rt.config:
            self._fingerprint = (rt.config, _fingerprint(rt))
        return self._fingerprint[1]

    async def api(self) -> Response:
        from gateway.metrics import health  # noqa: PLC0415

        io = await self.obs.io_stats()
        healthy, _ = health(self.runtime, io)
        inputs = gather(self.runtime, io, healthy=healthy, fingerprint=self._config_fingerprint())
        body = await asyncio.to_thread(_encode, inputs)
        return 200, "application/json", body
