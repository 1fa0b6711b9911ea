"""``/metrics`` (Prometheus text format) and ``/healthz`` (JSON) for a running gateway.

Nothing on the per-reading path touches the metrics: the runtime and its parts keep plain
counters, and :class:`RuntimeCollector` reads them when Prometheus scrapes. The text format
(0.0.4, what prometheus-client's ``generate_latest`` writes, line for line) is written
here: prometheus-client and the 34 modules it imports (an HTTP server, WSGI, ASGI,
multiprocess support) cost ``edgegw run`` about 2 MiB of resident memory for the few
lines below.

``/healthz`` answers 200 when the local automation works (MQTT connected, spool
writable, the event loop alive) and 503 otherwise. The Kafka uplink is reported but
never makes the gateway unhealthy: rules and actuators run without it, and the spool
keeps what it cannot ship yet.

Both handlers are coroutines. What they read from the disk (the spool's and the
forwarder's stats are SQLite queries; ``process_*`` reads ``/proc``) is read in a worker
thread of their own (:func:`read_io_stats`), so a slow or stuck disk never stalls the
event loop: the rules, the MQTT acks and the watchdog pings go on while a scrape waits.
The counters the loop itself keeps are read on the loop, where nothing changes them
under the reader.
"""

from __future__ import annotations

import asyncio
import gc
import json
import math
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from common import gcsettle
from gateway import __version__
from gateway.supervisor import crash_looping

if TYPE_CHECKING:
    from bridge.forwarder import ForwarderStats
    from bridge.spool import Spool, SpoolStats
    from bridge.uplink import UplinkProcess, UplinkProcessStats
    from gateway.http import Response
    from gateway.runtime import Runtime

__all__ = [
    "Family",
    "IoStats",
    "Observability",
    "ProcessMetrics",
    "RuntimeCollector",
    "health",
    "read_io_stats",
    "render",
]

_UPLINK_STATES = ("disabled", "starting", "connecting", "up", "backoff", "refused", "restarting", "stopped")
"""``restarting``: the uplink process is away (it died; edgegw run starts it again)."""
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _number(value: float) -> str:
    """A sample value as Prometheus (Go) prints it, e.g. ``1.0``, ``1.5e+07``, ``+Inf``."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    text = repr(value)
    dot = text.find(".")
    if value > 0 and dot > 6:  # Go switches to an exponent sooner than Python
        mantissa = f"{text[0]}.{text[1:dot]}{text[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return text


def _label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


@dataclass(slots=True)
class Family:
    """One metric and its samples. A counter's samples are named ``<name>_total``."""

    name: str
    doc: str
    kind: Literal["counter", "gauge"]
    labels: tuple[str, ...] = ()
    samples: list[tuple[tuple[str, ...], float]] = field(default_factory=list)

    def add(self, values: Sequence[str], value: float) -> Family:
        self.samples.append((tuple(values), float(value)))
        return self

    def lines(self) -> Iterator[str]:
        name = f"{self.name}_total" if self.kind == "counter" else self.name
        doc = self.doc.replace("\\", "\\\\").replace("\n", "\\n")
        yield f"# HELP {name} {doc}\n# TYPE {name} {self.kind}\n"
        order = sorted(range(len(self.labels)), key=self.labels.__getitem__)  # labels sorted by name
        for values, value in self.samples:
            if not self.labels:
                yield f"{name} {_number(value)}\n"
                continue
            pairs = ",".join(f'{self.labels[i]}="{_label_value(values[i])}"' for i in order)
            yield f"{name}{{{pairs}}} {_number(value)}\n"


def render(families: Iterable[Family]) -> bytes:
    """The Prometheus text format (0.0.4) of ``families``."""
    return "".join(line for family in families for line in family.lines()).encode()


def _counter(name: str, doc: str, labels: list[str], values: dict[Any, int] | dict[str, int]) -> Family:
    family = Family(name, doc, "counter", tuple(labels))
    for key, value in values.items():
        family.add(list(key) if isinstance(key, tuple) else [str(key)], value)
    return family


def _total(name: str, doc: str, value: float) -> Family:
    return Family(name, doc, "counter").add((), value)


def _gauge(name: str, doc: str, value: float, labels: dict[str, str] | None = None) -> Family:
    return Family(name, doc, "gauge", tuple(labels or {})).add(list((labels or {}).values()), value)


class ProcessMetrics:
    """``process_*``: CPU, memory, file descriptors, start time, from ``/proc`` (as
    prometheus-client's ProcessCollector). Nothing when ``/proc/stat`` cannot be read."""

    def __init__(self, proc: Path = Path("/proc")) -> None:
        self._proc = proc
        self._ticks = os.sysconf("SC_CLK_TCK")
        self._page = os.sysconf("SC_PAGESIZE")
        self._boot: float | None = None
        try:
            for line in (proc / "stat").read_bytes().splitlines():
                if line.startswith(b"btime "):
                    self._boot = float(line.split()[1])
        except OSError:
            pass

    def collect(self) -> Iterator[Family]:
        yield from _gc_families()
        if self._boot is None:
            return
        me = self._proc / "self"
        try:
            parts = (me / "stat").read_bytes().rsplit(b")", 1)[-1].split()
        except OSError:
            pass
        else:
            started = float(parts[19]) / self._ticks + self._boot
            yield _gauge("process_virtual_memory_bytes", "Virtual memory size in bytes.", float(parts[20]))
            yield _gauge(
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                float(parts[21]) * self._page,
            )
            yield _gauge(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                started,
            )
            cpu = (float(parts[11]) + float(parts[12])) / self._ticks
            yield _total("process_cpu_seconds", "Total user and system CPU time spent in seconds.", cpu)
        try:
            limit = next(line for line in (me / "limits").read_bytes().splitlines()
                         if line.startswith(b"Max open file"))  # fmt: skip
            fds = len(os.listdir(me / "fd"))
        except (OSError, StopIteration):
            return
        yield _gauge("process_open_fds", "Number of open file descriptors.", float(fds))
        yield _gauge("process_max_fds", "Maximum number of open file descriptors.", float(limit.split()[3]))


def _gc_families() -> Iterator[Family]:
    """prometheus-client's ``python_gc_*`` (per generation), and how long the passes took:
    with nearly everything freed by reference counting they should be rare and short."""
    stats = gc.get_stats()
    for name, doc, key in (
        ("python_gc_collections", "Number of times this generation was collected", "collections"),
        ("python_gc_objects_collected", "Objects collected during gc", "collected"),
    ):
        family = Family(name, doc, "counter", ("generation",))
        for generation, stat in enumerate(stats):
            family.add([str(generation)], stat[key])
        yield family
    yield _total("edgegw_gc_pause_seconds", "Time the cyclic collector held the GIL (every thread stopped)",
                 gcsettle.PAUSES.seconds)  # fmt: skip
    yield _gauge("edgegw_gc_pause_longest_seconds", "The longest collector pass since start",
                 gcsettle.PAUSES.longest)  # fmt: skip


def _pipeline_families(rt: Runtime) -> Iterator[Family]:
    ph = pipeline_health(rt)
    p = rt.pipeline.stats()
    yield _gauge("edgegw_mqtt_oldest_unacked_seconds", "Age of the oldest MQTT message not acknowledged yet",
                 ph.oldest_unacked_s)  # fmt: skip
    yield _gauge("edgegw_spool_writer_up", "1 while the spool's writer thread runs",
                 1.0 if ph.spool_writer_up else 0.0)  # fmt: skip
    yield _gauge("edgegw_pipeline_suspended", "1 while the pipeline waits for the spool to reopen",
                 1.0 if ph.suspended else 0.0)  # fmt: skip
    looping = Family("edgegw_component_crash_looping", "1 when it restarted 5 times within a minute", "gauge",
                     ("component",))  # fmt: skip
    for name in sorted(rt.state.restart_times):
        looping.add([name], 1.0 if name in ph.crash_looping else 0.0)
    yield looping
    yield _gauge("edgegw_pipeline_batches_in_flight", "Batches handed to the spool and not settled",
                 p.in_flight)  # fmt: skip
    yield _total("edgegw_redeliveries_skipped", "MQTT redeliveries (DUP) of messages already taken",
                 p.redeliveries)  # fmt: skip
    yield _total("edgegw_batches_voided", "Batches voided by a spool failure (MQTT: redelivered)",
                 p.voided)  # fmt: skip
    yield _total("edgegw_readings_lost_unacked",
                 "Readings voided that no broker redelivers (serial, QoS 0)", p.lost_unacked)  # fmt: skip
    st = rt.state
    yield _counter("edgegw_readings_shed", "At-most-once readings (QoS 0, serial) not spooled while the "
                   "spool writer was behind, per reason; their rules ran and their commands left", ["reason"],
                   {"spool_behind": 0, **st.shed})  # fmt: skip
    yield _gauge("edgegw_unclean_start", "1 when the last run did not stop cleanly (crash, kill, power cut)",
                 1.0 if st.unclean_start else 0.0)  # fmt: skip
    yield _gauge("edgegw_rows_lost_at_unclean_start",
                 "Committed spool rows gone at this start (at least; synchronous=normal and a power cut)",
                 float(st.lost_at_unclean_start))  # fmt: skip
    yield _counter("edgegw_poison_messages", "Messages dead-lettered because processing raised",
                   ["device", "reason"], p.poison)  # fmt: skip


def _homeassistant_families(rt: Runtime) -> Iterator[Family]:
    ha = rt.homeassistant
    if ha is None:
        return
    yield _gauge("edgegw_homeassistant_connected", "1 while the Home Assistant MQTT link is up",
                 1.0 if ha.link.connected else 0.0)  # fmt: skip
    yield _counter("edgegw_homeassistant_commands", "Commands from Home Assistant sent to actuators",
                   ["actuator"], dict(ha.commands))  # fmt: skip
    yield _counter("edgegw_homeassistant_commands_refused",
                   "Commands from Home Assistant the entity does not take", ["actuator"],
                   dict(ha.refused))  # fmt: skip


def _pipeline_and_homeassistant(rt: Runtime) -> Iterator[Family]:
    yield from _pipeline_families(rt)
    yield from _homeassistant_families(rt)


def _spool_families(s: SpoolStats) -> Iterator[Family]:
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
    yield _total("edgegw_spool_committed_rows", "Rows committed", s.committed_rows)
    yield _total("edgegw_spool_commits", "Spool transactions that wrote rows", s.commits)
    yield _total("edgegw_spool_syncs", "fsyncs making commits durable (MQTT 5: one per few)", s.syncs)
    if s.durable_ms_p50 is not None:
        yield _gauge("edgegw_spool_durable_p50_ms", "Submit to commit, p50 (recent groups)", s.durable_ms_p50)
    if s.durable_ms_p99 is not None:
        yield _gauge("edgegw_spool_durable_p99_ms", "Submit to commit, p99 (recent groups)", s.durable_ms_p99)


@dataclass(frozen=True, slots=True)
class IoStats:
    """What a scrape reads from the disk, read in a worker thread by :func:`read_io_stats`."""

    spool: SpoolStats | None = None
    forwarder: ForwarderStats | None = None
    process: tuple[Family, ...] = ()
    uplink: UplinkProcessStats | None = None
    """The uplink process (pid, restarts, resident memory)."""


def read_io_stats(spool: Spool | None, forwarder: UplinkProcess | None, process: ProcessMetrics) -> IoStats:
    """Blocking: SQLite queries (spool and forwarder stats) and ``/proc`` reads. Never on the loop."""
    return IoStats(
        spool=None if spool is None else spool.stats(),
        forwarder=None if forwarder is None else forwarder.stats(),
        process=tuple(process.collect()),
        uplink=None if forwarder is None else forwarder.process(),
    )


class RuntimeCollector:
    """Reads the runtime's counters at scrape time (on the loop), with ``io`` read off it."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def collect(self, io: IoStats) -> Iterator[Family]:
        rt = self.runtime
        st = rt.state
        mono = time.monotonic()
        yield _gauge(
            "edgegw_info",
            "Gateway build and identity",
            1,
            {"version": __version__, "gateway_id": rt.gateway_id},
        )
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
        online = Family("edgegw_device_online", "1 when the device reported recently", "gauge", ("device",))
        for device in profiles:
            online.add([device], 1.0 if str(rt.health.state(device, mono)) == "online" else 0.0)
        yield online
        es = rt.engine.stats
        yield _gauge("edgegw_rules", "Rules loaded", float(len(rt.engine.rules)))
        yield _total("edgegw_rule_evaluations", "Readings evaluated by the rules engine", es.readings)
        yield _counter("edgegw_rule_fires", "Rule fires, per rule", ["rule"], dict(st.fires))
        yield _total("edgegw_rule_clears", "Rule clears", es.clears)
        blocked = Family("edgegw_rule_blocked", "Fires dropped, per reason", "counter", ("reason",))
        blocked.add(["cooldown"], es.blocked_by_cooldown)
        blocked.add(["guard"], es.blocked_by_guard)
        blocked.add(["loop_guard"], es.loop_guard_trips)
        yield blocked
        yield _total("edgegw_rule_bad_readings", "Readings a rule could not compare", es.bad_readings)
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
        link = rt.command_link
        if link is not None:
            yield _gauge("edgegw_commands_held", "Commands waiting for the actuators' MQTT link to come back",
                         float(link.held))  # fmt: skip
            yield _counter("edgegw_commands_held_dropped", "Held commands not sent (too old, queue full...)",
                           ["actuator", "reason"], dict(link.held_dropped))  # fmt: skip
            yield _counter("edgegw_commands_sent_late", "Commands sent after waiting for the MQTT link",
                           ["actuator"], dict(link.sent_late))  # fmt: skip
        if io.spool is not None:
            yield from _spool_families(io.spool)
        yield from _uplink_families(io)
        yield _total(
            "edgegw_loop_late_ticks",
            "Event loop wakeups more than 2 ms late while mostly idle",
            st.late_ticks,
        )
        yield _total("edgegw_mqtt_holds", "MQTT reading paused until the spool writer caught up", st.holds)
        yield _counter("edgegw_component_restarts", "Component restarts", ["component"], dict(st.restarts))
        yield from _pipeline_and_homeassistant(rt)
        yield _total(
            "edgegw_sdnotify_errors",
            "Notifications systemd's socket refused (never fatal)",
            rt.notifier.errors,
        )
        if st.ready_mono is not None:
            yield _gauge("edgegw_ready_seconds", "Time from start to READY", st.ready_mono - st.started_mono)


def _uplink_families(io: IoStats) -> Iterator[Family]:
    fw = io.forwarder
    state = fw.state if fw is not None else "disabled"
    up = Family("edgegw_uplink_state", "Kafka uplink state (1 for the current one)", "gauge", ("state",))
    for name in _UPLINK_STATES:
        up.add([name], 1.0 if name == state else 0.0)
    yield up
    if fw is not None:
        yield _total("edgegw_forwarder_sent", "Events shipped to Kafka", fw.shipped)
        yield _total("edgegw_forwarder_retries", "Uplink reconnects", max(0, fw.reconnects - 1))
        yield _total("edgegw_forwarder_dead_lettered", "Events moved to dead letters", fw.dead_lettered)
        yield _total(
            "edgegw_forwarder_yields",
            "Backlog rounds followed by a pause because the event loop ran late",
            fw.yields,
        )
    if io.uplink is not None:
        yield from _uplink_process_families(io.uplink)


def _uplink_process_families(u: UplinkProcessStats) -> Iterator[Family]:
    yield _gauge("edgegw_uplink_process_up", "1 while the Kafka uplink process runs", 1.0 if u.up else 0.0)
    yield _total("edgegw_uplink_process_restarts", "Uplink process restarts (it died and was started again)",
                 u.restarts)  # fmt: skip
    if u.pid is not None:
        yield _gauge("edgegw_uplink_process_pid", "Process id of the uplink process", float(u.pid))
    if u.rss_bytes is not None:
        yield _gauge("edgegw_uplink_process_resident_memory_bytes", "Resident memory of the uplink process",
                     float(u.rss_bytes))  # fmt: skip


UNACKED_LIMIT_S = 30.0
"""An MQTT message read this long ago and still not acknowledged means the ingest path is
stalled (a spool commit takes milliseconds): /healthz answers 503 until it moves again."""


@dataclass(frozen=True, slots=True)
class PipelineHealth:
    """What the path of a reading says about itself (no I/O: read on the loop)."""

    oldest_unacked_s: float
    spool_writer_up: bool
    crash_looping: list[str]
    suspended: bool

    @property
    def reasons(self) -> list[str]:
        out = []
        if self.suspended:
            out.append("pipeline suspended: the spool failed and is being reopened")
        if not self.spool_writer_up:
            out.append("spool writer thread is not running")
        if self.oldest_unacked_s > UNACKED_LIMIT_S:
            out.append(f"oldest unacknowledged MQTT message is {self.oldest_unacked_s:.0f} s old "
                       f"(limit {UNACKED_LIMIT_S:.0f} s): ingest stalled")  # fmt: skip
        out += [f"component {name} is restarting in a loop" for name in self.crash_looping]
        return out


def pipeline_health(rt: Runtime) -> PipelineHealth:
    source = rt.mqtt_source
    return PipelineHealth(
        oldest_unacked_s=source.oldest_unacked_age() if source is not None else 0.0,
        spool_writer_up=rt.spool is not None and rt.spool.writer_alive,
        crash_looping=crash_looping(rt.state.restart_times, time.monotonic()),
        suspended=rt.pipeline.suspended,
    )


def health(runtime: Runtime, io: IoStats) -> tuple[bool, dict[str, Any]]:
    """Each component's state, and whether the local automation works (``io``: see :func:`read_io_stats`)."""
    rt = runtime
    components: dict[str, Any] = {}
    healthy = rt.ready
    ph = pipeline_health(rt)
    reasons = ph.reasons
    if not rt.ready:
        reasons.insert(0, "not ready yet")
    p = rt.pipeline.stats()
    components["pipeline"] = {
        "state": "suspended" if ph.suspended else "ok",
        "oldest_unacked_s": round(ph.oldest_unacked_s, 3),
        "batches_in_flight": p.in_flight,
        "redeliveries_skipped": p.redeliveries,
        "voided_batches": p.voided,
        "poison": sum(p.poison.values()),
        "crash_looping": ph.crash_looping,
        "last_stop": "unclean" if rt.state.unclean_start else "clean",
        "rows_lost_at_start": rt.state.lost_at_unclean_start,
    }
    healthy &= not reasons
    if rt.mqtt_source is not None:
        ok = bool(rt.mqtt_source.link.connected)
        components["mqtt_source"] = {"state": "connected" if ok else "disconnected"}
        healthy &= ok
        if not ok:
            reasons.append("mqtt source disconnected")
    if rt.command_link is not None:
        ok = bool(rt.command_link.link.connected)
        components["mqtt_actuators"] = {"state": "connected" if ok else "disconnected"}
        healthy &= ok
        if not ok:
            reasons.append("mqtt actuator link disconnected")
    if io.spool is not None:
        s = io.spool
        components["spool"] = {
            "state": "failed" if s.failed else "ok",
            "depth": s.depth,
            "bytes": s.bytes,
            "oldest_age_s": None if s.oldest_age is None else round(s.oldest_age, 3),
            "error": s.failed,
        }
        healthy &= s.failed is None and not s.disk_full
        if s.failed is not None:
            reasons.append(f"spool failed: {s.failed}")
        if s.disk_full:
            reasons.append("spool disk full: rows are dropped by policy (edgegw_spool_dropped_total)")
        components["spool"]["disk_full"] = s.disk_full
    fw = io.forwarder
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
    if io.uplink is not None:  # the uplink process away is not unhealthy: local automation works
        components["uplink"]["process"] = asdict(io.uplink)  # state, pid, restarts, last_exit, rss_bytes
    mono = time.monotonic()
    offline = [d.id for d in rt.config.devices if str(rt.health.state(d.id, mono)) == "offline"]
    components["devices"] = {"configured": len(rt.config.devices), "offline": offline}
    components["rules"] = {"loaded": len(rt.engine.rules), "reload_errors": rt.state.reload_errors}
    if rt.cloud is not None:
        components["cloud"] = rt.cloud.health()
    body = {
        "status": "ok" if healthy else "unhealthy",
        "gateway_id": rt.gateway_id,
        "version": __version__,
        "ready": rt.ready,
        "reasons": reasons,
        "components": components,
    }
    return healthy, body


class Observability:
    """The HTTP handlers: each returns ``(status, type, body)``; ``metrics()`` and
    ``healthz()`` are coroutines that read the disk in a worker thread of their own."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.collector = RuntimeCollector(runtime)
        self.process = ProcessMetrics()
        # One thread of its own, not asyncio's default executor: scrapes that hang on a stuck
        # disk queue up here and never hold the threads the runtime stops and flushes with.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edgegw-metrics")
        self._reading: asyncio.Future[IoStats] | None = None

    async def io_stats(self) -> IoStats:
        """The disk-bound stats, read off the loop; requests that come while a read is in
        flight share it (a stuck disk holds one thread, however often Prometheus retries)."""
        if self._reading is None or self._reading.done():
            rt = self.runtime
            loop = asyncio.get_running_loop()
            self._reading = loop.run_in_executor(
                self._executor, read_io_stats, rt.spool, rt.forwarder, self.process
            )
        return await asyncio.shield(self._reading)

    async def metrics(self) -> Response:
        io = await self.io_stats()
        cloud = self.runtime.cloud.families() if self.runtime.cloud is not None else ()
        return 200, CONTENT_TYPE, render([*self.collector.collect(io), *cloud, *io.process])

    def rules(self) -> Response:
        """Every rule's trace (``edgegw rules explain`` reads it)."""
        body = json.dumps(self.runtime.engine.traces(), default=str, indent=1)
        return 200, "application/json", body.encode()

    async def healthz(self) -> Response:
        ok, body = health(self.runtime, await self.io_stats())
        return (200 if ok else 503), "application/json", (json.dumps(body, indent=2) + "\n").encode()
