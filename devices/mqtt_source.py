"""The MQTT source: QoS 1 subscriptions on a persistent session, readings out in batches,
PUBACKs only once the pipeline says the batch is durable.

Per wakeup the source reads every packet that is ready, routes each message by topic to
the devices whose filter matches, decodes it with the device's profile, and hands one
:class:`~devices.sink.SourceBatch` to its sink (the pipeline). The batch carries the
:class:`~gateway.model.Origin` of every QoS 1 message (packet id, digest, DUP flag) for
the redelivery check. Bad input is counted per device and reason
(:class:`BadInputCounter`) and never reaches the sink; messages on topics no device
claims count as ``unknown_topic``; a decoder that raises anything else makes the
message poison: counted (``decoder_error``) and dead-lettered by the pipeline.

Acks: when the pipeline settles a batch durable, the source sends the PUBACKs of every
QoS 1 message in it, in the order the messages arrived, after every earlier batch was
acked too (MQTT wants PUBACKs in order). A batch settled void (the spool failed) can
never be acked: the source drops the connection, and the broker sends every message it
holds unacknowledged again, with DUP set, on the persistent session. A batch settled
after the connection it came on was lost is ignored for the same reason.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions
from pydantic import SecretStr

from devices.config import DeviceConfig, MqttConnection
from devices.errors_counter import UNKNOWN_DEVICE, BadInputCounter
from devices.health import HealthTracker
from devices.mqtt_client import InMessage, MqttLink
from devices.profiles import Decoder, build_decoder
from devices.sink import BatchSink, BatchState, Poison, SourceBatch
from gateway.errors import PayloadError
from gateway.model import Origin, Reading

__all__ = ["MqttSource", "TopicRouter"]

_log = structlog.get_logger("edgegw.devices.mqtt")


class TopicRouter:
    """Topic to decoders: exact filters by dict lookup, wildcard filters matched once per
    topic and cached (the cache is bounded)."""

    __slots__ = ("_cache", "_exact", "_wild", "cache_size")

    def __init__(self, decoders: Sequence[tuple[str, Decoder]], cache_size: int = 50_000) -> None:
        self._exact: dict[str, list[Decoder]] = {}
        self._wild: list[tuple[str, Decoder]] = []
        for topic, decoder in decoders:
            if "+" in topic or "#" in topic:
                self._wild.append((topic, decoder))
            else:
                self._exact.setdefault(topic, []).append(decoder)
        self._cache: dict[str, list[Decoder]] = {}
        self.cache_size = cache_size

    def route(self, topic: str) -> list[Decoder]:
        found = self._exact.get(topic)
        if not self._wild:
            return found or []
        cached = self._cache.get(topic)
        if cached is not None:
            return cached
        result = list(found or [])
        result += [dec for pattern, dec in self._wild if mqtt.topic_matches_sub(pattern, topic)]
        if len(self._cache) >= self.cache_size:
            self._cache.clear()
        self._cache[topic] = result
        return result


class _MqttBatch(SourceBatch):
    """A batch of one MQTT connection (``generation``): the packet ids to acknowledge."""

    __slots__ = ("_source", "generation", "mids", "msgs")

    def __init__(self, source: MqttSource, generation: int, *, mids: list[int], msgs: list[InMessage],
                 readings: list[Reading], origins: list[Origin | None], messages: list[Origin],
                 poison: list[Poison], received: float) -> None:  # fmt: skip
        super().__init__(readings, origins=origins, messages=messages, poison=poison, received=received)
        self._source = source
        self.generation = generation
        self.mids = mids
        self.msgs = msgs

    def describe(self, index: int) -> tuple[str, bytes]:
        message = self.msgs[index]
        return message.topic or repr(message.raw_topic), message.payload

    def _on_durable(self) -> None:
        self._source._acks_due()

    def _on_void(self) -> None:
        self._source._voided(self)


class MqttSource:
    """Readings from MQTT devices. ``await source.run()``; ``source.stop()`` to end."""

    def __init__(
        self,
        conn: MqttConnection,
        devices: Sequence[DeviceConfig],
        sink: BatchSink,
        *,
        password: SecretStr | None = None,
        counter: BadInputCounter | None = None,
        health: HealthTracker | None = None,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        clock_synced: Callable[[], bool] | None = None,
        rand: Callable[[], float] | None = None,
    ) -> None:
        mqtt_devices = [d for d in devices if d.transport == "mqtt"]
        self.devices = mqtt_devices
        self.topics = sorted({d.topic for d in mqtt_devices if d.topic})
        self.router = TopicRouter([(d.topic, build_decoder(d)) for d in mqtt_devices if d.topic])
        self.counter = counter or BadInputCounter()
        self.health = health
        self._sink = sink
        self._wall = wall_clock
        self._mono = monotonic
        self._clock_synced = clock_synced
        self.link = MqttLink(
            conn,
            password=password,
            persistent=True,
            manual_ack=True,
            on_connected=self._subscribe,
            on_messages=self.ingest,
            name="mqtt-source",
            rand=rand,
        )
        self.link.client.on_subscribe = self._subscribed_cb
        self.subscribed = asyncio.Event()
        """Set once the broker confirmed the subscriptions of the current connection."""
        self._pending: deque[_MqttBatch] = deque()
        self._acks_scheduled = False
        self.messages = 0
        self.readings = 0
        self.acked = 0
        self.voided = 0
        """Batches voided (the spool failed before they were durable): redelivered."""

    async def run(self) -> None:
        await self.link.run()

    def stop(self) -> None:
        self.link.stop()

    def pause(self) -> None:
        """Take no more messages; batches already handed on are still acked when durable."""
        self.link.pause_reading()

    def hold(self, hold: bool) -> None:
        """Back-pressure from the consumer: take no messages while ``hold`` (see MqttLink.hold_reading)."""
        self.link.hold_reading(hold)

    # ------------------------------------------------------------------ subscriptions
    def _subscribed_cb(self, _client: object, _userdata: object, _mid: int,
                       codes: list[ReasonCode], _props: object) -> None:
        refused = [t for t, code in zip(self.topics, codes, strict=False) if code.is_failure]
        if refused:
            # the broker's ACL: these devices will stay silent; the others work
            _log.error("mqtt subscription refused", topics=refused[:20], count=len(refused))
        self.subscribed.set()

    def _subscribe(self, session_present: bool) -> None:
        # a new connection: the earlier one's batches can never be acknowledged (the broker
        # redelivers their messages); void them, whatever the spool does with them later
        old, self._pending = self._pending, deque()
        for batch in old:
            if batch.state is BatchState.PENDING or batch.state is BatchState.DURABLE:
                batch.state = BatchState.VOID
        self.subscribed.clear()
        if not self.topics:
            self.subscribed.set()
            return
        client = self.link.client
        if self.link.conn.protocol == "5":
            # retain handling 1: retained messages only for a subscription that is new
            opts = SubscribeOptions(qos=1, retainHandling=1)
            client.subscribe([(t, opts) for t in self.topics])
        else:
            client.subscribe([(t, 1) for t in self.topics])
        _log.info("mqtt subscribed", topics=len(self.topics), session_present=session_present)

    # ------------------------------------------------------------------ hot path
    def ingest(self, messages: list[InMessage]) -> None:  # noqa: PLR0915 - the hot path, in one frame
        """Decode one wakeup's messages and hand them to the sink as one batch."""
        now = self._wall()
        mono = self._mono()
        route = self.router.route
        counter = self.counter
        health = self.health
        readings: list[Reading] = []
        origins: list[Origin | None] = []
        msgs: list[InMessage] = []
        taken: list[Origin] = []
        poison: list[Poison] = []
        mids: list[int] = []
        origin_of = Origin.of
        for message in messages:
            origin: Origin | None = None
            if message.qos == 1:
                mids.append(message.mid)
                origin = origin_of(message.raw_topic, message.payload, mid=message.mid, dup=message.dup)
                taken.append(origin)
            topic = message.topic
            if topic is None:
                counter.record(UNKNOWN_DEVICE, "bad_topic", repr(message.raw_topic[:80]), mono)
                continue
            decoders = route(topic)
            if not decoders:
                counter.record(UNKNOWN_DEVICE, "unknown_topic", topic[:120], mono, topic=topic[:120])
                continue
            payload = message.payload
            for decoder in decoders:
                try:
                    decoded = decoder.decode(topic, payload, now)
                except PayloadError as exc:
                    counter.record(decoder.device_id, exc.reason, exc.detail, mono, topic=topic)
                    continue
                except Exception as exc:  # noqa: BLE001 - poison: dead-lettered, never fatal
                    error = f"{type(exc).__name__}: {exc}"
                    counter.record(decoder.device_id, "decoder_error", error[:200], mono, topic=topic)
                    poison.append(Poison(decoder.device_id, "decoder_error", topic, payload, error))
                    continue
                n = len(decoded)
                readings += decoded
                origins += [origin] * n
                msgs += [message] * n
                if health is not None:
                    health.seen(decoder.device_id, mono, now)
        self.messages += len(messages)
        if not mids and not readings and not poison:
            return  # QoS 0 messages that held only bad input: nothing to settle
        if self._clock_synced is not None and not self._clock_synced():
            for reading in readings:
                reading.clock_synced = False
        batch = _MqttBatch(self, self.link.generation, mids=mids, msgs=msgs, readings=readings,
                           origins=origins, messages=taken, poison=poison, received=mono)  # fmt: skip
        self._pending.append(batch)
        self.readings += len(readings)
        self._sink(batch)

    # ------------------------------------------------------------------ acks (event loop)
    def _acks_due(self) -> None:
        """A batch became durable: its PUBACKs leave at the end of this pass of the loop,
        with those of every batch the same group commit settled (one write, not one each)."""
        if self._acks_scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a unit test settling by hand): at once
            self._send_acks()
            return
        self._acks_scheduled = True
        loop.call_soon(self._send_scheduled_acks)

    def _send_scheduled_acks(self) -> None:
        self._acks_scheduled = False
        self._send_acks()

    def _send_acks(self) -> None:
        """Send the PUBACKs of the durable batches at the head of the line, in order."""
        link = self.link
        pending = self._pending
        if not link.connected:
            return  # the broker redelivers; the next connection starts a new line
        mids: list[int] = []
        generation = link.generation
        while pending and pending[0].state is BatchState.DURABLE:
            done = pending.popleft()
            if done.generation == generation:
                mids += done.mids
                done.acked()
        if mids:
            link.client.ack_many(mids)
            self.acked += len(mids)
            link.after_io()

    def _voided(self, batch: _MqttBatch) -> None:
        """A batch nobody will make durable: its PUBACKs can never go, and every later one
        would wait behind it. Drop the connection; the broker redelivers them all."""
        self.voided += 1
        link = self.link
        if batch.generation == link.generation and link.connected:
            _log.warning("mqtt batch voided; reconnecting so that the broker redelivers",
                         unacked_batches=len(self._pending))  # fmt: skip
            link.drop("a batch was voided")

    @property
    def unacked_batches(self) -> int:
        return len(self._pending)

    def oldest_unacked_age(self) -> float:
        """Seconds since the oldest message not yet acknowledged was read (0 if none)."""
        pending = self._pending
        while pending and pending[0].generation != self.link.generation:
            pending.popleft()  # an earlier connection's: the broker redelivers them
        return max(0.0, self._mono() - pending[0].received) if pending else 0.0


async def run_until_stopped(source: MqttSource, stop: asyncio.Event) -> None:
    """Run ``source`` until ``stop`` is set (a helper for scripts and the bench)."""
    task = asyncio.create_task(source.run())
    await stop.wait()
    source.stop()
    await task
