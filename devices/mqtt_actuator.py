"""The MQTT side of the actuators: publish commands, watch state topics for read-back.

Its own connection (client id ``<client_id>-cmd``, clean session). A command that cannot
leave at once waits in a small hold queue, whole and in order, and goes out as soon as it
can: while the link is down (the gateway just started and rules fire on the backlog the
broker kept for the sensors, or the broker restarts), it leaves when the link is back;
while paho's outgoing queue is full (``max_queued_messages``, bounded so its 16-bit
message ids never wrap; the broker is slow to PUBACK), it leaves as the queue drains:
back-pressure that never blocks the rule path. A held command is neither sent nor failed:
:meth:`Actuators.sent_late <devices.actuators.Actuators.sent_late>` counts it as sent,
and starts its read-back, when it leaves.

The queue is bounded by count (``mqtt.command_hold_max``: beyond it the oldest command
is dropped) and by age (``mqtt.command_hold_max_age``: an older command is dropped, not
sent late; a light a rule switched on ten minutes ago must not flash on now). Drops are
counted per actuator and reason in ``held_dropped`` and logged once per burst; commands
sent after a wait are counted in ``sent_late``.

paho itself sends again, on reconnect, the messages it had not seen acknowledged when the
connection was lost (QoS 1: at least once), whatever their age. When even the newest of
them is older than the age bound (the link was down that long), they are dropped instead
(``resend_too_old``).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.enums import MQTTErrorCode
from pydantic import SecretStr

from devices.actuators import Actuators, Outgoing
from devices.config import MqttConnection
from devices.mqtt_client import InMessage, MqttLink
from gateway.errors import ActuatorError

__all__ = ["CommandHold", "Held", "MqttCommandLink"]

DRAIN_INTERVAL = 0.01
"""Seconds between attempts while paho's outgoing queue is full."""
_log = structlog.get_logger("edgegw.devices.actuators")


@dataclass(slots=True)
class Held:
    """A command waiting in the hold queue."""

    outgoing: Outgoing
    since: float
    """Monotonic time it was held."""
    next: int = 0
    """Its messages already handed to paho (paho's queue filled up in the middle of it)."""


class CommandHold:
    """Commands waiting to leave, oldest first, bounded by count and age. Pure: time is
    passed in. ``dropped`` counts ``(actuator, reason)``: ``queue_full``, ``too_old``,
    and what the link adds (``error``, ``stopped``)."""

    def __init__(self, max_count: int, max_age: float) -> None:
        self.max_count = max_count
        self.max_age = max_age
        self.dropped: Counter[tuple[str, str]] = Counter()
        self._queue: deque[Held] = deque()

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, outgoing: Outgoing, now: float, *, start: int = 0) -> Held | None:
        """Hold ``outgoing`` (its messages from ``start`` on); returns the oldest command
        when it was dropped to make room."""
        self._queue.append(Held(outgoing, now, start))
        if len(self._queue) <= self.max_count:
            return None
        oldest = self._queue.popleft()
        self.dropped[(oldest.outgoing.actuator, "queue_full")] += 1
        return oldest

    def expire(self, now: float) -> list[Held]:
        """Drop (and return) the commands held longer than ``max_age``."""
        queue, expired = self._queue, []
        while queue and now - queue[0].since > self.max_age:
            held = queue.popleft()
            self.dropped[(held.outgoing.actuator, "too_old")] += 1
            expired.append(held)
        return expired

    def head(self) -> Held | None:
        return self._queue[0] if self._queue else None

    def pop(self) -> Held:
        return self._queue.popleft()

    def drop_all(self, reason: str) -> list[Held]:
        dropped = list(self._queue)
        self._queue.clear()
        for held in dropped:
            self.dropped[(held.outgoing.actuator, reason)] += 1
        return dropped


class MqttCommandLink:
    """Implements :class:`devices.actuators.Publisher` (and ``submit``) over one MQTT connection."""

    def __init__(
        self,
        conn: MqttConnection,
        actuators: Actuators,
        *,
        password: SecretStr | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] | None = None,
    ) -> None:
        self.actuators = actuators
        self._mono = monotonic
        self.link = MqttLink(
            conn,
            password=password,
            client_id=f"{conn.client_id}-cmd"[:64],
            persistent=False,
            on_connected=self._on_connected,
            on_messages=self._on_messages,
            name="mqtt-actuators",
            rand=rand,
        )
        self._hold = CommandHold(conn.command_hold_max, conn.command_hold_max_age)
        self._drain: asyncio.Handle | None = None
        self._burst: Counter[tuple[str, str]] = Counter()
        self._outage = False  # commands were held while the link was down
        self._burst_sent = 0
        self._last_handed = -math.inf  # when paho last took a message: its queue is no newer
        self._owner: dict[str, str] = {}  # command topic -> actuator, as seen
        self.backlog_waits = 0
        """Times paho's outgoing queue was full."""
        self.sent_late: Counter[str] = Counter()
        """Commands sent after waiting in the hold queue, per actuator."""
        actuators.set_publisher(self, submit=self.submit)

    @property
    def held(self) -> int:
        """Commands waiting in the hold queue now."""
        return len(self._hold)

    @property
    def held_dropped(self) -> Counter[tuple[str, str]]:
        """Held commands dropped, per ``(actuator, reason)``; reasons ``queue_full``,
        ``too_old``, ``error`` (paho refused it), ``stopped`` (still held at stop) and
        ``resend_too_old`` (messages paho would have sent again after a long outage; these
        were counted as sent by :class:`Actuators` when they first left)."""
        return self._hold.dropped

    async def run(self) -> None:
        await self.link.run()

    def stop(self) -> None:
        if self._drain is not None:
            self._drain.cancel()
            self._drain = None
        self._note_dropped(self._hold.drop_all("stopped"), "stopped")
        self._outage = self._outage and self._burst_sent > 0  # nothing came back: no "sent" line
        self._end_burst()
        self.link.stop()

    # ------------------------------------------------------------------ link callbacks
    def _on_connected(self, _session_present: bool) -> None:
        # runs in paho's CONNACK handling, before it sends again what it kept unacknowledged
        topics = self.actuators.state_topics
        if topics:
            self.link.client.subscribe([(t, 0) for t in topics])
        if self._mono() - self._last_handed > self._hold.max_age:
            for message in self.link.client.drop_out_messages():
                actuator = self._owner.get(message.topic, "?")
                self._hold.dropped[(actuator, "resend_too_old")] += 1
                self._burst[(actuator, "resend_too_old")] += 1
        if len(self._hold):
            # after the CONNACK handling: what paho sends again is older than ours
            self._schedule_drain(0.0)
        else:
            self._end_burst()

    def _on_messages(self, messages: list[InMessage]) -> None:
        now = self._mono()
        for message in messages:
            if message.topic is not None:
                self.actuators.on_state(message.topic, message.payload, now)

    # ------------------------------------------------------------------ sending
    def submit(self, outgoing: Outgoing) -> bool:
        """Send one command's messages now (True), or hold the command (False)."""
        start = 0
        if self.link.connected and not len(self._hold):
            start = self._send_from(outgoing, 0)
            if start == len(outgoing.messages):
                return True
            self._schedule_drain(DRAIN_INTERVAL)  # paho's queue is full: the rest waits
        elif not self.link.connected and not len(self._hold):
            _log.info("mqtt actuator link down: holding commands until it is back",
                      max_count=self._hold.max_count, max_age=self._hold.max_age)  # fmt: skip
        if not self.link.connected:
            self._outage = True
        oldest = self._hold.add(outgoing, self._mono(), start=start)
        if oldest is not None:
            self._note_dropped([oldest], "queue_full")
        return False

    def publish(self, topic: str, payload: bytes, qos: int) -> None:
        """One message now, or :class:`ActuatorError` (no holding: commands go through ``submit``)."""
        if not self.link.connected:
            raise ActuatorError(f"MQTT broker {self.link.conn.host} not connected")
        self._last_handed = self._mono()
        if len(self._hold) or not self._send(topic, payload, qos):
            raise ActuatorError("MQTT outgoing queue full (the broker does not acknowledge)")

    def _send_from(self, outgoing: Outgoing, start: int) -> int:
        """Hand the messages from ``start`` on to paho; returns where it stopped (queue full)."""
        messages, qos, owner = outgoing.messages, outgoing.qos, self._owner
        self._last_handed = self._mono()
        for i in range(start, len(messages)):
            topic, payload = messages[i]
            if not self._send(topic, payload, qos):
                return i
            owner[topic] = outgoing.actuator
        return len(messages)

    def _send(self, topic: str, payload: bytes, qos: int) -> bool:
        """Hand one message to paho; False when its queue is full."""
        info = self.link.client.publish(topic, payload, qos=qos)
        if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
            self.backlog_waits += 1
            return False
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            raise ActuatorError(f"publish to {topic} failed: {mqtt.error_string(info.rc)}")
        self.link.after_io()
        return True

    def _schedule_drain(self, delay: float) -> None:
        loop = self.link._loop
        if loop is None or self._drain is not None:
            return
        self._drain = loop.call_later(delay, self._drain_held) if delay else loop.call_soon(self._drain_held)

    def _drain_held(self) -> None:
        self._drain = None
        if not self.link.connected:
            return  # _on_connected drains once it is back
        hold = self._hold
        now = self._mono()
        self._note_dropped(hold.expire(now), "too_old")
        while (held := hold.head()) is not None and self.link.connected:
            outgoing = held.outgoing
            try:
                held.next = self._send_from(outgoing, held.next)
            except ActuatorError as exc:
                hold.pop()
                hold.dropped[(outgoing.actuator, "error")] += 1
                self._burst[(outgoing.actuator, "error")] += 1
                _log.warning("held command failed", actuator=outgoing.actuator, error=str(exc))
                continue
            if held.next < len(outgoing.messages):
                self._schedule_drain(DRAIN_INTERVAL)
                return
            hold.pop()
            self.sent_late[outgoing.actuator] += 1
            self._burst_sent += 1
            self.actuators.sent_late(outgoing, now)
        if not len(hold):
            self._end_burst()

    # ------------------------------------------------------------------ drops and their logs
    def _note_dropped(self, dropped: list[Held], reason: str) -> None:
        if not dropped:
            return
        if reason == "queue_full" and not any(r == "queue_full" for _, r in self._burst):
            _log.warning("command hold queue full: dropping the oldest held commands",
                         actuator=dropped[0].outgoing.actuator, max_count=self._hold.max_count)  # fmt: skip
        for held in dropped:
            self._burst[(held.outgoing.actuator, reason)] += 1

    def _end_burst(self) -> None:
        """The hold queue is empty: one line for what was sent late and what was dropped."""
        if self._outage:
            _log.info("held commands sent after the mqtt actuator link came back", count=self._burst_sent)
            self._outage = False
        self._burst_sent = 0
        if self._burst:
            _log.warning("held commands dropped",
                         dropped={f"{a}/{r}": n for (a, r), n in sorted(self._burst.items())})  # fmt: skip
            self._burst.clear()
