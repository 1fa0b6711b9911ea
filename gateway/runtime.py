"""The runtime: sources -> rules engine -> actuators, and everything -> spool -> Kafka.

One asyncio event loop and one :class:`asyncio.TaskGroup`:

- the MQTT source and each serial source hand batches of readings to
  :meth:`Runtime.on_readings` on the loop thread. The readings go through the rules
  engine *first* (commands leave for the actuators at once), then to the spool, whose
  writer thread acks the batch (the MQTT PUBACKs) after the group commit;
- the ticker runs the engine's timers, the actuators' read-back checks, device health
  and rule-state snapshots; the systemd watchdog is pinged from the same loop, so a
  hung loop gets the service restarted;
- the forwarder ships the spool to Kafka in its own thread: the loop never waits on it;
- the HTTP server answers ``/metrics`` and ``/healthz``.

A component that fails is restarted with backoff by :meth:`Runtime._supervise` without
touching the others. SIGTERM (and Ctrl-C) stops gracefully: the spool is flushed and
the rule state saved. SIGHUP reloads rules, devices and actuators from the config file
without losing readings or rule state; a reload with an invalid config is logged and the
running config stays.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import sys
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from bridge import Forwarder, KafkaSecrets, Origin, Spool, lane_priorities
from common.backoff import Backoff
from devices import (
    Actuators,
    BadInputCounter,
    HealthTracker,
    MqttCommandLink,
    MqttConnection,
    MqttSource,
    SerialLineWriter,
    SerialSource,
)
from gateway.config import LoadedConfig, load_config
from gateway.errors import ActuatorError, ConfigError, GatewayError
from gateway.model import Command, Event, Reading
from gateway.rulestate import RULE_STATE_FILE, read_rule_state, set_aside, write_rule_state
from gateway.sdnotify import Notifier, watchdog_loop
from gateway.secrets import resolve_secret
from gateway.supervisor import supervise
from gateway.timesync import ClockSync, SystemClockProbe
from rules import Now, RuleEngine

__all__ = ["Runtime", "RuntimeState"]

_log = structlog.get_logger("edgegw.runtime")

TICK_S = 0.05
BURST_READINGS = 20_000
QUIET_S = 1.0
UPLINK_WAIT_S = 60.0
"""``on_drained`` runs once at least BURST_READINGS came in since its last call, none came
for QUIET_S and the spool is empty again (Kafka has it all), or UPLINK_WAIT_S went by
without Kafka catching up: after a backlog or a burst went through."""
SNAPSHOT_EVERY_S = 10.0
STOP_BUDGET_S = 8.0  # systemd's TimeoutStopSec is larger; the issue asks for 10 s
PENDING_HIGH_MIN = 8000
"""Readings handed to the spool and not committed yet above which MQTT reading pauses
(at least 4 groups of ``commit_rows``); it resumes below a quarter of that."""
HOLD_CHECK_S = 0.005
LAG_LIMIT_S = 0.002
"""The event loop waking this much later than asked means the local path is short of CPU
(or of the GIL): a draining backlog then pauses between rounds (see Forwarder ``busy``)."""
GC_THRESHOLDS = (20_000, 20, 50)
"""gen0 collects after 20,000 allocations (CPython: 700); see _settle_gc."""
GIL_SWITCH_S = 0.0005
"""How long the event loop may wait for the GIL while the spool writer or the forwarder
runs Python code. CPython's default (5 ms) showed up whole in the sensor-to-actuator p99."""


@dataclass(slots=True)
class RuntimeState:
    """What the live view, /healthz and /metrics read: plain counters, updated on the loop."""

    started_mono: float = field(default_factory=time.monotonic)
    ready_mono: float | None = None
    readings: Counter[str] = field(default_factory=Counter)  # per device
    commands: Counter[str] = field(default_factory=Counter)  # per actuator, sent
    command_errors: Counter[str] = field(default_factory=Counter)
    events: Counter[str] = field(default_factory=Counter)  # per kind
    fires: Counter[str] = field(default_factory=Counter)  # per rule
    last_values: dict[str, tuple[Any, float]] = field(default_factory=dict)  # sensor -> (value, ts)
    actuator_state: dict[str, dict[str, Any]] = field(default_factory=dict)
    recent: deque[str] = field(default_factory=lambda: deque(maxlen=12))  # rule events, newest last
    restarts: Counter[str] = field(default_factory=Counter)  # per component
    component_errors: dict[str, str] = field(default_factory=dict)
    reloads: int = 0
    reload_errors: int = 0
    late_ticks: int = 0  # ticker wakeups more than LAG_LIMIT_S late
    holds: int = 0  # times MQTT reading paused until the spool writer caught up
    spool_errors: int = 0


def _settle_gc() -> None:
    """Move what start-up built (modules, config, compiled rules: ~100k objects) out of the
    collector's reach and collect the young generation less often. With CPython's defaults
    the batches in flight (readings, spool rows, Kafka records) kept triggering full
    collections that walked every start-up object again: milliseconds each, on whichever
    thread allocated, the event loop included."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


class Runtime:
    """The running gateway: ``await Runtime(loaded, gateway_id=...).run()``; :meth:`stop` ends it."""

    def __init__(
        self,
        loaded: LoadedConfig,
        *,
        gateway_id: str,
        notifier: Notifier | None = None,
        on_ready: Callable[[], None] | None = None,
        on_drained: Callable[[], None] | None = None,
        environ: dict[str, str] | None = None,
    ) -> None:
        self.loaded = loaded
        self.config = loaded.config
        self.gateway_id = gateway_id
        self.notifier = notifier or Notifier({})
        self._on_ready = on_ready
        self._on_drained = on_drained
        """Run in a worker thread after a burst was absorbed: `edgegw run` hands the C heap's
        free pages back to the kernel there (malloc_trim: 15-20 MiB after a 300k drain)."""
        self._received = 0  # readings taken, all sources
        self._last_received = (0, time.monotonic())  # the count, and when a tick saw it change
        self._drained_at = 0  # the count when on_drained last ran
        self._next_drained_check = 0.0
        self._draining: asyncio.Future[None] | None = None
        self._environ = dict(os.environ if environ is None else environ)
        self.state = RuntimeState()
        self.state_dir = self.config.gateway.resolved_state_dir(self._environ)
        self.counter = BadInputCounter()
        self.clock = ClockSync(SystemClockProbe())
        self.health = HealthTracker.for_devices(self.config.devices)
        self.engine = RuleEngine(loaded.rules, self.now())
        self.actuators = Actuators(self.config.actuators)
        self.spool: Spool | None = None
        self.forwarder: Forwarder | None = None
        self.mqtt_source: MqttSource | None = None
        self.command_link: MqttCommandLink | None = None
        self.serial_sources: list[SerialSource] = []
        self.serial_writers: dict[str, SerialLineWriter] = {}
        self.http_port: int | None = None
        self._stop = asyncio.Event()
        self._reload = asyncio.Event()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._generation = 0  # bumped when a reload replaces the device components
        self._group: asyncio.TaskGroup | None = None
        self._last_snapshot = time.monotonic()
        self._saving: asyncio.Future[bool] | None = None
        self._late_until = 0.0
        self._held: MqttSource | None = None  # the source held back until the spool catches up
        self._pending_high = max(PENDING_HIGH_MIN, 4 * self.config.bridge.spool.commit_rows)

    # ------------------------------------------------------------------ time
    @staticmethod
    def now() -> Now:
        return Now(time.monotonic(), time.time())

    @property
    def ready(self) -> bool:
        return self.state.ready_mono is not None

    # ------------------------------------------------------------------ hot path
    def on_readings(self, readings: list[Reading], ack: Any) -> None:
        """A batch from a source: rules first, then the spool (which acks when durable)."""
        now = self.now()
        engine = self.engine
        counts = self.state.readings
        last = self.state.last_values
        for reading in readings:
            counts[reading.device_id] += 1
            last[f"{reading.device_id}/{reading.metric}"] = (reading.value, reading.ts)
            actions = engine.on_reading(reading, now)
            if actions:
                self._apply(actions, now)
        spool = self.spool
        if spool is None:  # pragma: no cover - sources start after the spool opened
            return
        messages = getattr(ack, "origins", None)
        origins: list[Origin | None] | None = None
        if messages:
            by_message: dict[int, Origin] = {}
            origins = []
            for message in messages:
                origin = by_message.get(id(message))
                if origin is None:
                    origin = by_message[id(message)] = Origin.of(
                        message.raw_topic, message.payload, dup=message.dup, mid=message.mid
                    )
                origins.append(origin)
        spool.submit(readings, ack, origins=origins)
        self._received += len(readings)
        if spool.pending > self._pending_high and self._held is None and self.mqtt_source is not None:
            self._hold(self.mqtt_source)

    def _hold(self, source: MqttSource) -> None:
        """The spool writer is behind (a burst, a broker replaying a session's backlog):
        stop reading MQTT until it caught up. Without this a broker that sends faster than
        the spool commits filled RAM with readings waiting for the writer (200k seen)."""
        self._held = source
        source.hold(True)
        self.state.holds += 1
        asyncio.get_running_loop().call_later(HOLD_CHECK_S, self._release_when_caught_up)

    def _release_when_caught_up(self) -> None:
        source, spool = self._held, self.spool
        if source is None:
            return
        if spool is None or spool.pending <= self._pending_high // 4 or source is not self.mqtt_source:
            source.hold(False)
            self._held = None
            return
        asyncio.get_running_loop().call_later(HOLD_CHECK_S, self._release_when_caught_up)

    def _apply(self, actions: list[Command | Event], now: Now) -> None:
        state = self.state
        for action in actions:
            if isinstance(action, Command):
                try:
                    self.actuators.apply(action, now.mono)
                except ActuatorError:
                    state.command_errors[action.actuator] += 1
                else:
                    state.commands[action.actuator] += 1
                    state.actuator_state[action.actuator] = dict(action.payload)
            else:
                kind = str(action.kind)
                state.events[kind] += 1
                if kind == "fired":
                    state.fires[action.rule_id] += 1
                stamp = time.strftime("%H:%M:%S", time.localtime(action.ts))
                state.recent.append(f"{stamp} {kind:<8} {action.rule_id}")
        if self.spool is not None:
            try:
                self.spool.submit(actions)
            except GatewayError as exc:  # the spool failed for good; the local path goes on
                state.spool_errors += 1
                state.component_errors["spool"] = str(exc)

    # ------------------------------------------------------------------ life cycle
    async def run(self) -> None:
        """Run until :meth:`stop` (or SIGTERM/SIGINT). Raises on a fatal start error."""
        loop = asyncio.get_running_loop()
        sys.setswitchinterval(GIL_SWITCH_S)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._open_spool()
        self._restore_rule_state()
        self._build_devices()
        self._start_forwarder()
        http = await self._start_http()
        handlers = self._install_signals(loop)
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                self._start_components()
                background = [
                    group.create_task(self._ticker(), name="ticker"),
                    group.create_task(self._announce_ready(), name="ready"),
                    group.create_task(watchdog_loop(self.notifier), name="watchdog"),
                    group.create_task(self._reloader(), name="reloader"),
                    group.create_task(self._spool_watch(), name="spool-watch"),
                ]
                await self._stop.wait()
                self.notifier.stopping("stopping")
                _log.info("stopping")
                await self._shutdown()
                for task in background:
                    task.cancel()
        finally:
            for sig in handlers:
                loop.remove_signal_handler(sig)
            if http is not None:
                await http.close()
            if self._saving is not None:  # the last periodic write first: both use the same temporary file
                try:
                    await self._saving
                except Exception:  # noqa: BLE001 - logged; the final snapshot below is written anyway
                    _log.exception("periodic rule state write failed")
            self._save_rule_state()
            if self.forwarder is not None:
                await asyncio.to_thread(self.forwarder.stop, 5.0)
            if self.spool is not None:
                await asyncio.to_thread(self.spool.close, 5.0)
            for writer in self.serial_writers.values():
                writer.close()
            _log.info("stopped", readings=sum(self.state.readings.values()))

    def stop(self) -> None:
        self._stop.set()

    def request_reload(self) -> None:
        self._reload.set()

    async def _shutdown(self) -> None:
        """Stop taking messages, flush the spool while MQTT is still up (so the PUBACKs of
        everything taken go out), then stop: a graceful stop leaves no redeliveries."""
        if self.mqtt_source is not None:
            self.mqtt_source.pause()
        if self.spool is not None:
            with contextlib.suppress(GatewayError):
                await asyncio.to_thread(self.spool.flush, STOP_BUDGET_S / 2)
            await asyncio.sleep(0.05)  # let the PUBACKs queued by the flush leave
        for source in self._stoppables():
            source.stop()
        pending = [t for t in self._tasks.values() if not t.done()]
        if pending:
            _done, still = await asyncio.wait(pending, timeout=STOP_BUDGET_S / 2)
            for task in still:
                task.cancel()

    def _stoppables(self) -> list[Any]:
        items: list[Any] = [*self.serial_sources]
        if self.mqtt_source is not None:
            items.append(self.mqtt_source)
        if self.command_link is not None:
            items.append(self.command_link)
        return items

    # ------------------------------------------------------------------ building
    def _mqtt_connection(self) -> MqttConnection:
        conn = self.config.mqtt
        if "client_id" not in conn.model_fields_set:
            # two gateways on one broker must not share a client id (they would kick each other off)
            conn = conn.model_copy(update={"client_id": f"edgegw-{self.gateway_id}"[:60]})
        return conn

    def _mqtt_password(self) -> Any:
        ref = self.config.mqtt.password
        return resolve_secret(ref, environ=self._environ, what="mqtt password") if ref else None

    def _open_spool(self) -> None:
        bridge = self.config.bridge
        spool_cfg = bridge.spool
        if "path" not in spool_cfg.model_fields_set:
            spool_cfg = spool_cfg.model_copy(update={"path": self.state_dir / "spool.db"})
        spool_cfg.path.parent.mkdir(parents=True, exist_ok=True)
        lanes = lane_priorities(bridge.kafka.topics.of_kind()) if bridge.kafka is not None else None
        self.spool = Spool.open(spool_cfg, lanes=lanes)

    def _start_forwarder(self) -> None:
        kafka = self.config.bridge.kafka
        if kafka is None or self.spool is None:
            _log.info("no kafka uplink configured: the spool keeps everything (up to its cap and TTL)")
            return
        security = kafka.security
        secrets = KafkaSecrets(
            sasl_password=(
                resolve_secret(security.sasl.password, environ=self._environ, what="kafka sasl password")
                if security.sasl is not None
                else None
            ),
            ssl_key_password=(
                resolve_secret(security.tls.key_password, environ=self._environ, what="kafka key password")
                if security.tls is not None and security.tls.key_password is not None
                else None
            ),
        )
        self.forwarder = Forwarder.for_kafka(self.spool, kafka, gateway_id=self.gateway_id, secrets=secrets,
                                             busy=self._loop_late)
        self.forwarder.start()

    def _build_devices(self) -> None:
        config = self.config
        conn = self._mqtt_connection()
        password = self._mqtt_password()
        self.health = HealthTracker.for_devices(config.devices)
        self.serial_writers = {
            a.id: SerialLineWriter(a.serial.port, a.serial.baud)
            for a in config.actuators
            if a.transport == "serial" and a.serial is not None
        }
        self.actuators = Actuators(config.actuators, writers=self.serial_writers)
        mqtt_devices = [d for d in config.devices if d.transport == "mqtt"]
        self.mqtt_source = (
            MqttSource(
                conn,
                mqtt_devices,
                self.on_readings,
                password=password,
                counter=self.counter,
                health=self.health,
                clock_synced=lambda: self.clock.synchronized,
            )
            if mqtt_devices
            else None
        )
        mqtt_actuators = [a for a in config.actuators if a.transport == "mqtt"]
        self.command_link = (
            MqttCommandLink(conn, self.actuators, password=password) if mqtt_actuators else None
        )
        self.serial_sources = [
            SerialSource(d, self.on_readings, counter=self.counter, health=self.health)
            for d in config.devices
            if d.transport == "serial"
        ]

    def _start_components(self) -> None:
        if self.mqtt_source is not None:
            self._spawn("mqtt-source", self.mqtt_source.run)
        if self.command_link is not None:
            self._spawn("mqtt-actuators", self.command_link.run)
        for source in self.serial_sources:
            self._spawn(f"serial:{source.device.id}", source.run)

    def _spawn(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        assert self._group is not None
        generation = self._generation
        task = supervise(
            name,
            run,
            keep_running=lambda: not self._stop.is_set() and generation == self._generation,
            wake=self._stop,
            restarts=self.state.restarts,
            errors=self.state.component_errors,
        )
        self._tasks[name] = self._group.create_task(task, name=name)

    async def _announce_ready(self) -> None:
        """READY once MQTT is subscribed, the spool open and the rules loaded (never waits on Kafka)."""
        if self.mqtt_source is not None:
            await self.mqtt_source.subscribed.wait()
        elif self.command_link is not None:
            while not self.command_link.link.connected:  # noqa: ASYNC110 - the link exposes no event
                await asyncio.sleep(0.05)
        self.state.ready_mono = time.monotonic()
        took = self.state.ready_mono - self.state.started_mono
        _settle_gc()
        self.notifier.ready(f"ready: {len(self.config.devices)} devices, {len(self.engine.rules)} rules")
        _log.info("ready", gateway_id=self.gateway_id, seconds=round(took, 3),
                  devices=len(self.config.devices), rules=len(self.engine.rules))  # fmt: skip
        if self._on_ready is not None:
            self._on_ready()

    # ------------------------------------------------------------------ periodic work
    async def _ticker(self) -> None:
        next_health = 0.0
        while True:
            now = self.now()
            actions = self.engine.tick(now)
            if actions:
                self._apply(actions, now)
            self.actuators.check(now.mono)
            if now.mono >= next_health:  # stale_after is seconds or more: once a second is enough
                next_health = now.mono + 1.0
                for change in self.health.check(now.mono):
                    _log.warning("device offline", device=change.device_id)
            if now.mono - self._last_snapshot >= SNAPSHOT_EVERY_S:
                self._save_rule_state_soon()
            self._after_burst(now.mono)
            slept = time.monotonic()
            source = self.mqtt_source
            busy = source.link.busy_seconds if source is not None else 0.0
            await asyncio.sleep(TICK_S)
            woke = time.monotonic()
            lag = woke - slept - TICK_S
            working = (source.link.busy_seconds if source is not None else 0.0) - busy
            if lag > LAG_LIMIT_S and working < (woke - slept) / 2:
                # late while mostly idle: other threads or processes hold the CPU (or the GIL)
                # the local path needs; the backlog drain makes room for a second. Late because
                # of our own ingest (a burst) is not the drain's fault: it goes on at full speed.
                self._late_until = woke + 1.0
                self.state.late_ticks += 1

    def _after_burst(self, mono: float) -> None:
        """Call ``on_drained`` once a burst went through: readings stopped coming and the
        spool is empty again (or Kafka stays away). Checked at most once per QUIET_S."""
        received, since = self._last_received
        if self._received != received:
            self._last_received = (self._received, mono)
            return
        if (self._on_drained is None or received - self._drained_at < BURST_READINGS
                or mono - since < QUIET_S or mono < self._next_drained_check
                or (self._draining is not None and not self._draining.done())):  # fmt: skip
            return
        self._next_drained_check = mono + QUIET_S
        if self.spool is not None:
            s = self.spool.stats()  # no query while the spool is empty
            if s.pending or (s.depth and mono - since < UPLINK_WAIT_S):
                return
        self._drained_at = received
        self._draining = asyncio.ensure_future(asyncio.to_thread(self._on_drained))

    async def _spool_watch(self) -> None:
        """Reopen the spool (and restart the forwarder) when its writer failed for good.

        Meanwhile ``submit`` raises, the sources stop acking and the broker keeps the
        messages (persistent session): they come again once the spool is back.
        """
        backoff = Backoff(1.0, 30.0)
        while True:
            await asyncio.sleep(1.0)
            spool = self.spool
            if spool is None or spool.failed is None:
                continue
            self.state.component_errors["spool"] = str(spool.failed)
            _log.error("spool failed; reopening", error=str(spool.failed))
            if self.forwarder is not None:
                await asyncio.to_thread(self.forwarder.stop, 5.0)
                self.forwarder = None
            await asyncio.to_thread(spool.close, 5.0)
            try:
                await asyncio.to_thread(self._open_spool)
            except GatewayError as exc:
                _log.error("cannot reopen the spool", error=str(exc))
                self.state.restarts["spool"] += 1
                await asyncio.sleep(backoff.next())
                continue
            backoff.reset()
            self.state.restarts["spool"] += 1
            self._start_forwarder()

    # ------------------------------------------------------------------ rule state
    @property
    def rule_state_path(self) -> Path:
        return self.state_dir / RULE_STATE_FILE

    def _loop_late(self) -> bool:
        """True for a second after the event loop woke more than LAG_LIMIT_S late (any thread)."""
        return time.monotonic() < self._late_until

    def _save_rule_state_soon(self) -> None:
        """The periodic snapshot: taken on the loop (consistent with the rules), written and
        fsynced in a worker thread. An fsync waits for the disk, tens of milliseconds on a
        busy SD card: on the loop it showed as a stall of the local rule path every 10 s."""
        if self._saving is not None and not self._saving.done():
            return
        self._last_snapshot = time.monotonic()
        data = self.engine.snapshot(self.now())
        self._saving = asyncio.ensure_future(asyncio.to_thread(write_rule_state, self.rule_state_path, data))

    def _save_rule_state(self) -> None:
        self._last_snapshot = time.monotonic()
        write_rule_state(self.rule_state_path, self.engine.snapshot(self.now()))

    def _restore_rule_state(self) -> None:
        data = read_rule_state(self.rule_state_path)
        if data is None:
            return
        try:
            self.engine.restore(data, self.now())
        except (ValueError, KeyError, TypeError, GatewayError) as exc:
            set_aside(self.rule_state_path, str(exc))
        else:
            _log.info("rule state restored", path=str(self.rule_state_path), rules=len(self.engine.rules))

    # ------------------------------------------------------------------ reload (SIGHUP)
    async def _reloader(self) -> None:
        while True:
            await self._reload.wait()
            self._reload.clear()
            await self._do_reload()

    async def _do_reload(self) -> None:
        self.notifier.reloading("reloading")
        try:
            loaded = await asyncio.to_thread(load_config, self.loaded.path)
        except ConfigError as exc:
            self.state.reload_errors += 1
            for issue in exc.issues:
                _log.error("reload refused: invalid config; keeping the running one", issue=str(issue))
            self.notifier.ready("reload refused: invalid config")
            return
        old = self.config
        self.loaded, self.config = loaded, loaded.config
        self.engine = self.engine.with_rules(loaded.rules, self.now())
        devices_changed = (old.devices, old.actuators, old.mqtt) != (
            loaded.config.devices, loaded.config.actuators, loaded.config.mqtt,
        )  # fmt: skip
        if devices_changed:
            await self._restart_devices()
        self.state.reloads += 1
        _log.info("reloaded", rules=len(self.engine.rules), devices_changed=devices_changed)
        self.notifier.ready("reloaded")

    async def _restart_devices(self) -> None:
        """Stop the device components and start them from the new config. Readings the
        broker handed over and that were not acked yet come again (persistent session)."""
        if self.spool is not None:
            await asyncio.to_thread(self.spool.flush, 5.0)
        self._generation += 1  # first: the old components' supervisors must not restart them
        for component in self._stoppables():
            component.stop()
        old_tasks = list(self._tasks.values())
        self._tasks.clear()
        if old_tasks:
            _done, pending = await asyncio.wait(old_tasks, timeout=5.0)
            for task in pending:
                task.cancel()
        for writer in self.serial_writers.values():
            writer.close()
        self._build_devices()
        self._start_components()

    # ------------------------------------------------------------------ plumbing
    async def _start_http(self) -> Any:
        section = self.config.http
        if not section.enabled:
            return None
        from gateway.http import HttpServer  # noqa: PLC0415
        from gateway.metrics import Observability  # noqa: PLC0415

        obs = Observability(self)
        server = HttpServer(
            section.host,
            section.port,
            {"/metrics": obs.metrics, "/healthz": obs.healthz, "/rules": obs.rules},
        )
        await server.start()
        self.http_port = server.port
        return server

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> list[int]:
        installed: list[int] = []
        for sig, action in (
            (signal.SIGTERM, self.stop),
            (signal.SIGINT, self.stop),
            (signal.SIGHUP, self.request_reload),
        ):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, action)
                installed.append(sig)
        return installed
