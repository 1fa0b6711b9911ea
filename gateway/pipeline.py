"""The path of a reading, owned in one place: source batch -> redelivery check -> rules ->
actuators -> spool -> settle (durable or void).

::

    pipeline = Pipeline(actuators, counters, now=Runtime.now)
    pipeline.attach(spool, engine, ledger)   # at start, and again after a spool failure
    source = MqttSource(..., pipeline.on_batch)
    pipeline.tick(now)                       # timers: `for`, reverts, stale sensors

Per batch, on the event loop:

1. The redelivery check (:class:`~gateway.ledger.DeliveryLedger`) decides, per MQTT QoS 1
   message, whether it was taken before (a DUP whose PUBACK was lost in a crash): such a
   message's readings neither run the rules nor reach the spool again.
2. Every other reading goes through the rules engine; commands leave for the actuators at
   once (the local path never waits for the spool or Kafka). A reading whose rules raise
   is poison: counted per device and reason, dead-lettered, never fatal.
3. The batch is handed to the spool in *one* submission: its readings, the events and
   commands they caused, the state of every rule they changed, the packet ids they took
   and their poison. One transaction holds all of it, so the rule state on disk always
   matches the readings the broker saw acknowledged: after a crash, the unacknowledged
   readings come again and give exactly the events and commands they gave before.
4. The spool's writer settles the batch: ``durable()`` (the MQTT source sends the
   PUBACKs) or ``void()`` (the spool failed: nobody will commit it; the MQTT source
   reconnects and the broker redelivers). Both happen on the event loop.

A spool failure voids every batch in flight and suspends the pipeline; the runtime
reopens the spool and :meth:`Pipeline.attach` starts again from what is committed (rule
state, packet ids), exactly as a process restart would.

Back-pressure, while the spool writer is far behind (``pending`` above the high mark):

- a batch with QoS 1 messages holds MQTT reading until the writer caught up: the broker
  keeps the messages (nothing is lost, nothing is acknowledged before it is durable);
- a batch with nothing to redeliver (QoS 0 messages, serial lines) is *not* held: holding
  the socket of an at-most-once stream only moves the loss to the broker, where nobody
  counts it (Mosquitto drops QoS 0 for a client that does not read, beyond its
  ``max_queued_messages``; bench/qos0_overload.py) and the readings lost there fire no
  rule. Its rules run and its commands leave at once as always; its *readings* are left
  out of the spool submission (events, commands and rule state still go in), counted in
  ``Counters.shed`` per reason (``spool_behind``) and logged once per episode (it ends
  below a quarter of the mark, as a hold does). Only if the spool falls behind by
  ``SHED_HOLD_FACTOR`` times the mark even so (a stuck disk: events and commands alone
  fill it) is reading held anyway: memory is bounded first.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from bridge import DeadInput, Spool
from devices import Actuators, BadInputCounter, SourceBatch
from gateway.errors import ActuatorError, GatewayError
from gateway.ledger import DeliveryLedger
from gateway.model import Command, Event, Origin, Reading
from rules import Now, RuleEngine

__all__ = ["Counters", "Pipeline", "PipelineStats"]

_log = structlog.get_logger("edgegw.pipeline")

PENDING_HIGH_MIN = 8000
"""Readings handed to the spool and not committed yet above which MQTT reading pauses
(at least 4 groups of ``commit_rows``); it resumes below a quarter of that."""
HOLD_CHECK_S = 0.005
SHED_HOLD_FACTOR = 8
"""At-most-once batches (QoS 0, serial) shed their readings above the high mark; above this
many times the mark, MQTT reading is held for them too (memory first)."""
SHED_SPOOL_BEHIND = "spool_behind"
SENSORS_MAX = 10_000
"""Sensors (and devices) whose last value and count are kept for the live view and the
metrics: wildcard topics could otherwise make these maps grow without bound."""


@dataclass(slots=True)
class Counters:
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
    rule_events: deque[Event] = field(default_factory=lambda: deque(maxlen=50))  # the status page's
    last_commands: dict[str, Command] = field(default_factory=dict)  # per actuator, sent or held
    restarts: Counter[str] = field(default_factory=Counter)  # per component
    restart_times: dict[str, deque[float]] = field(default_factory=dict)  # per component, monotonic
    component_errors: dict[str, str] = field(default_factory=dict)
    reloads: int = 0
    reload_errors: int = 0
    late_ticks: int = 0  # ticker wakeups more than LAG_LIMIT_S late
    holds: int = 0  # times MQTT reading paused until the spool writer caught up
    shed: Counter[str] = field(default_factory=Counter)  # at-most-once readings not spooled, per reason
    spool_errors: int = 0
    redeliveries: int = 0  # MQTT messages taken before (DUP), not taken again
    poison: Counter[tuple[str, str]] = field(default_factory=Counter)  # (device, reason)
    voided: int = 0  # batches voided by a spool failure
    lost_unacked: int = 0  # readings voided that no broker will redeliver (serial)
    unclean_start: bool = False  # the last run did not stop cleanly (crash, kill, power cut)
    lost_at_unclean_start: int = 0  # committed rows the spool no longer held at this start (at least)


@dataclass(frozen=True, slots=True)
class PipelineStats:
    """A snapshot for /metrics and /healthz."""

    suspended: bool
    received: int
    in_flight: int
    """Batches handed to the spool and not settled yet."""
    redeliveries: int
    voided: int
    lost_unacked: int
    poison: dict[tuple[str, str], int]


class Pipeline:
    """See the module docstring. Lives on the event loop; the spool's writer thread only
    reaches it through ``call_soon_threadsafe``."""

    def __init__(self, actuators: Actuators, counters: Counters, *, now: Callable[[], Now],
                 bad_input: BadInputCounter, commit_rows: int = 2000,
                 on_failure: Callable[[str], None] | None = None) -> None:  # fmt: skip
        self.actuators = actuators
        self.counters = counters
        self.now = now
        self.bad_input = bad_input
        self.spool: Spool | None = None
        self.engine: RuleEngine | None = None
        self.ledger = DeliveryLedger()
        self.received = 0
        self._on_failure = on_failure
        self._loop: asyncio.AbstractEventLoop | None = None
        self._from_writer_calls: deque[tuple[Callable[..., None], tuple[Any, ...]]] = deque()
        """Settlements the spool's writer thread handed over, run on the loop in order."""
        self._writer_wake = False
        """A wake of the loop for them is on its way (one per group commit, not per batch)."""
        self._in_flight = 0
        self._pending_high = max(PENDING_HIGH_MIN, 4 * commit_rows)
        self.acked_seq = 0
        """The highest spool sequence of a batch its source acknowledged (PUBACKs sent): the
        run marker keeps it, so that what a power cut took can be told at the next start."""
        self.hold: Callable[[bool], None] | None = None
        """Pauses (True) and resumes (False) MQTT reading: back-pressure from the spool."""
        self._held = False
        self._shedding = 0
        """Readings shed in the current episode (0: not shedding)."""

    # ------------------------------------------------------------------ life cycle
    def attach(self, spool: Spool, engine: RuleEngine, ledger: DeliveryLedger) -> None:
        """Start taking batches on ``spool``, with the engine and ledger restored from it."""
        with contextlib.suppress(RuntimeError):  # no loop yet: taken at the first batch
            self._loop = asyncio.get_running_loop()
        self.spool, self.engine, self.ledger = spool, engine, ledger
        self._in_flight = 0

    def suspend(self, reason: str) -> None:
        """Take nothing more (batches are voided at once) until :meth:`attach`."""
        if self.spool is None:
            return
        _log.error("pipeline suspended", reason=reason)
        self.spool = None
        self.ledger.void()
        self._release()

    @property
    def suspended(self) -> bool:
        return self.spool is None

    def stats(self) -> PipelineStats:
        c = self.counters
        return PipelineStats(self.spool is None, self.received, self._in_flight, c.redeliveries, c.voided,
                             c.lost_unacked, dict(c.poison))  # fmt: skip

    # ------------------------------------------------------------------ hot path
    def on_batch(self, batch: SourceBatch) -> None:
        """A source's batch (the sink of every source). Never raises."""
        spool, engine = self.spool, self.engine
        if spool is None or engine is None:
            self._void(batch)
            return
        counters = self.counters
        taken: list[Origin] = []
        skip: set[Origin] | None = None
        if batch.messages:
            take = self.ledger.take
            for origin in batch.messages:
                if take(origin):
                    taken.append(origin)
                else:
                    if skip is None:
                        skip = set()
                    skip.add(origin)
                    counters.redeliveries += 1
        now = self.now()
        readings = batch.readings
        origins = batch.origins
        kept: list[Any] = []
        dead: list[DeadInput] = []
        counts = counters.readings
        last = counters.last_values
        on_reading = engine.on_reading
        for i, reading in enumerate(readings):
            if skip is not None and origins is not None and origins[i] in skip:
                continue
            device = reading.device_id
            sensor = f"{device}/{reading.metric}"
            if sensor in last or len(last) < SENSORS_MAX:
                last[sensor] = (reading.value, reading.ts)
                counts[device] += 1
            try:
                actions = on_reading(reading, now)
            except Exception as exc:  # noqa: BLE001 - poison: dead-lettered, never fatal
                dead.append(self._poison_reading(batch, i, reading, exc))
                continue
            kept.append(reading)
            if actions:
                self._apply(actions, now)
                kept += actions
        for poison in batch.poison:
            dead.append(DeadInput(poison.topic, poison.payload, poison.reason, poison.error))
            counters.poison[(poison.device_id, poison.reason)] += 1
        self._take(spool, batch, kept, taken=taken, changes=engine.take_changes(now), dead=dead)

    def tick(self, now: Now) -> None:
        """Run the engine's timers; what they decide is spooled like a batch's actions."""
        spool, engine = self.spool, self.engine
        if spool is None or engine is None:
            return
        try:
            actions = engine.tick(now)
        except Exception as exc:  # noqa: BLE001 - a rule timer that raises must not stop the ticker
            _log.exception("rule timer failed", error=str(exc))
            actions = []
        if actions:
            self._apply(actions, now)
        changes = engine.take_changes(now)
        if actions or changes:
            self._submit(spool, list(actions), changes=changes)

    def operator_command(self, command: Command) -> bool:
        """A command from outside the rules (Home Assistant): sent like a rule's and spooled
        (shipped as ``edgegw.command.v1``). False when the actuator refused it."""
        spool = self.spool
        failed = self.counters.command_errors[command.actuator]
        self._apply([command], self.now())
        if spool is not None:
            self._submit(spool, [command])
        return self.counters.command_errors[command.actuator] == failed

    def save_summary(self) -> None:
        """Queue the rules' traces, counters and sensors' last-seen times (periodically and
        at stop); the per-rule state is committed with every batch already."""
        spool, engine = self.spool, self.engine
        if spool is None or engine is None:
            return
        from rules.state import summary_entry  # noqa: PLC0415

        self._submit(spool, [], changes=summary_entry(engine, self.now()))

    def _poison_reading(self, batch: SourceBatch, index: int, reading: Reading, exc: Exception) -> DeadInput:
        error = f"{type(exc).__name__}: {exc}"
        key, payload = batch.describe(index)
        self.counters.poison[(reading.device_id, "rule_error")] += 1
        self.bad_input.record(reading.device_id, "rule_error", error[:200], time.monotonic(), topic=key)
        _log.error("a rule raised on a reading; dead-lettered", device=reading.device_id,
                   sensor=reading.sensor, error=error[:300])  # fmt: skip
        return DeadInput(key, payload, "rule_error", error)

    def _apply(self, actions: list[Command | Event], now: Now) -> None:
        c = self.counters
        for action in actions:
            if isinstance(action, Command):
                try:
                    self.actuators.apply(action, now.mono)
                except ActuatorError:
                    c.command_errors[action.actuator] += 1
                except Exception:  # noqa: BLE001 - one actuator's bug must not stop the rules
                    c.command_errors[action.actuator] += 1
                    _log.exception("actuator failed", actuator=action.actuator)
                else:
                    c.commands[action.actuator] += 1
                    c.actuator_state[action.actuator] = dict(action.payload)
                    c.last_commands[action.actuator] = action
            else:
                kind = str(action.kind)
                c.events[kind] += 1
                if kind == "fired":
                    c.fires[action.rule_id] += 1
                stamp = time.strftime("%H:%M:%S", time.localtime(action.ts))
                c.recent.append(f"{stamp} {kind:<8} {action.rule_id}")
                c.rule_events.append(action)

    # ------------------------------------------------------------------ the spool's side
    def _submit(self, spool: Spool, items: list[Any], *, batch: SourceBatch | None = None,
                taken: list[Origin] | None = None, changes: dict[str, Any] | None = None,
                dead: list[DeadInput] | None = None, hold_above: int | None = None) -> None:  # fmt: skip
        """Hand one submission to the spool; ``batch`` is settled from the writer thread
        through the event loop (durable or void). MQTT reading is held when the spool's
        pending items exceed ``hold_above`` (a source batch's; other submissions never hold)."""
        settle_ok = settle_void = None
        taken = taken or []
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        handle: list[Any] = []
        if batch is not None:
            def settle_ok() -> None:
                self._from_writer(self._durable, spool, batch, taken, handle)

            def settle_void() -> None:
                self._from_writer(self._voided_by_spool, spool, batch, handle)
        try:
            handle.append(spool.submit(items, settle_ok, on_void=settle_void,
                                       marks=[(o.mid, o.digest) for o in taken] if taken else (),
                                       state=changes, dead=dead or ()))  # fmt: skip
        except GatewayError as exc:  # the spool failed for good; the local path goes on
            self.counters.spool_errors += 1
            self.counters.component_errors["spool"] = str(exc)
            if batch is not None:
                self._void(batch)
            self._failed(str(exc))
            return
        if batch is not None:
            self._in_flight += 1
        if hold_above is not None and spool.pending > hold_above and not self._held and self.hold is not None:
            self._hold()

    def _from_writer(self, fn: Callable[..., None], *args: Any) -> None:
        """From the writer thread: run ``fn(*args)`` on the loop. A group commit settles
        every batch it held at once; they share one wake of the loop (a write to its
        self-pipe), and their sources' PUBACKs can then leave together."""
        loop = self._loop
        assert loop is not None  # set by _submit, on the loop
        self._from_writer_calls.append((fn, args))
        if self._writer_wake:  # cleared by the loop before it drains: this call is seen
            return
        self._writer_wake = True
        with contextlib.suppress(RuntimeError):  # the loop is closed: the process is ending
            loop.call_soon_threadsafe(self._run_from_writer)

    def _run_from_writer(self) -> None:
        self._writer_wake = False  # before draining: a call appended from now on wakes again
        calls = self._from_writer_calls
        while calls:
            fn, args = calls.popleft()
            try:
                fn(*args)
            except Exception:  # noqa: BLE001 - one batch's settlement must not strand the rest
                _log.exception("pipeline: settling a batch failed")

    def _durable(self, spool: Spool, batch: SourceBatch, taken: list[Origin], handle: list[Any]) -> None:
        if spool is self.spool:
            self._in_flight -= 1
            if taken:
                self.ledger.durable(taken)
        # committed, even by a spool that failed since (then the ledger is rebuilt from it)
        batch.spool_seq = handle[0].last_seq if handle else 0
        handle.clear()  # the submission and settle_ok held each other: now refcounting frees them
        if batch.messages:
            batch.on_acked = self._acked
            batch.durable()
        else:  # nothing to acknowledge to anyone (serial, QoS 0): taken once durable
            batch.durable()
            self._acked(batch)

    def _acked(self, batch: SourceBatch) -> None:
        self.acked_seq = max(self.acked_seq, batch.spool_seq)

    def _voided_by_spool(self, spool: Spool, batch: SourceBatch, handle: list[Any]) -> None:
        handle.clear()
        if spool is self.spool:
            self._in_flight -= 1
            self._failed(str(spool.failed or "spool failed"))
        self._void(batch)

    def _void(self, batch: SourceBatch) -> None:
        if batch.state > 1:  # ACKED or VOID already
            return
        self.counters.voided += 1
        if not batch.messages:  # nothing will redeliver these (serial): say how many
            self.counters.lost_unacked += len(batch.readings)
        batch.void()

    def _failed(self, reason: str) -> None:
        if self.spool is None:
            return
        self.suspend(reason)
        if self._on_failure is not None:
            self._on_failure(reason)

    # ------------------------------------------------------------------ back-pressure
    def _hold(self) -> None:
        """The spool writer is behind (a burst, a broker replaying a session's backlog):
        stop reading MQTT until it caught up. Without this a broker that sends faster than
        the spool commits filled RAM with readings waiting for the writer (200k seen)."""
        assert self.hold is not None
        assert self._loop is not None
        self._held = True
        self.hold(True)
        self.counters.holds += 1
        self._loop.call_later(HOLD_CHECK_S, self._release_when_caught_up)

    def _take(self, spool: Spool, batch: SourceBatch, kept: list[Any], *, taken: list[Origin],
              changes: dict[str, Any] | None, dead: list[DeadInput]) -> None:  # fmt: skip
        """Submit a source batch under back-pressure: a batch with QoS 1 messages holds
        reading at the mark; an at-most-once batch (QoS 0, serial) sheds its readings above
        it and holds only far above it (see the module docstring)."""
        high = self._pending_high
        far = high * SHED_HOLD_FACTOR
        if batch.messages:
            if self._shedding:
                self._end_shedding()
        elif spool.pending > (high // 4 if self._shedding else high):
            self.received += len(kept)  # taken, shed or not (the runtime sees a burst go on)
            kept = self._shed(spool, kept)
            self._submit(spool, kept, taken=taken, changes=changes, dead=dead, hold_above=far)
            batch.durable()  # nothing to acknowledge, nothing of it to wait for: settled (and freed) now
            return
        elif self._shedding:
            self._end_shedding()
        self.received += len(kept)
        self._submit(spool, kept, batch=batch, taken=taken, changes=changes, dead=dead,
                     hold_above=high if batch.messages else far)  # fmt: skip

    def _shed(self, spool: Spool, kept: list[Any]) -> list[Any]:
        """The spool is behind and nothing will redeliver this batch (QoS 0, serial): its
        rules ran and its commands left; keep its events and commands for the spool and
        leave its readings out (counted, logged once per episode)."""
        actions = [item for item in kept if not isinstance(item, Reading)]
        shed = len(kept) - len(actions)
        if shed:
            self.counters.shed[SHED_SPOOL_BEHIND] += shed
            if not self._shedding:
                _log.warning("spool writer behind: QoS 0 readings are not spooled until it catches up "
                             "(rules still run, commands still leave)", pending=spool.pending,
                             high=self._pending_high)  # fmt: skip
            self._shedding += shed
        return actions

    def _end_shedding(self) -> None:
        _log.info("spool writer caught up: QoS 0 readings are spooled again", shed=self._shedding)
        self._shedding = 0

    def _release_when_caught_up(self) -> None:
        if not self._held:
            return
        spool = self.spool
        if spool is None or spool.pending <= self._pending_high // 4:
            self._release()
            return
        assert self._loop is not None
        self._loop.call_later(HOLD_CHECK_S, self._release_when_caught_up)

    def _release(self) -> None:
        if self._held:
            self._held = False
            if self.hold is not None:
                self.hold(False)
