"""The MQTT source: QoS 1 subscriptions on a persistent session, readings out in batches,
PUBACKs only once the consumer says the batch is durable.

The runtime gives the source a *sink*::

    def sink(readings: list[Reading], ack: Ack) -> None:
        spool.put_many(readings, then=ack)   # call ack() after the group commit

``ack.origins`` lines up with ``readings``: the message each reading came from
(``.topic``, ``.payload``, ``.dup``), for the spool's recognition of DUP redeliveries.
``ack()`` may be called from any thread, at most once; the source sends the PUBACKs of
that batch (every QoS 1 message in it, including the ones that held only bad input) in
the order the messages arrived, after every earlier batch was acked too (MQTT wants
PUBACKs in order). A batch acked after the connection it came on was lost is ignored:
the broker sends those messages again (with DUP set) on the persistent session.

Per wakeup the source reads every packet that is ready, routes each message by topic to
the devices whose filter matches, decodes it with the device's profile, and calls the
sink once. Bad input is counted per device and reason (:class:`BadInputCounter`) and
never reaches the sink; messages on topics no device claims count as ``unknown_topic``.
"""

from __future__ import annotations

import asyncio
import threading
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
from devices.sink import ReadingSink
from gateway.errors import PayloadError
from gateway.model import Reading

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


class _Batch:
    """The ack handle of one batch.

    ``origins`` lines up with the batch's readings: the message each reading came from
    (``.topic``, ``.payload``, ``.dup``), so the spool can recognise a DUP redelivery of a
    message it already committed.
    """

    __slots__ = ("_source", "acked", "generation", "mids", "origins")

    def __init__(self, source: MqttSource, generation: int, mids: list[int],
                 origins: list[InMessage]) -> None:
        self._source = source
        self.generation = generation
        self.mids = mids
        self.origins = origins
        self.acked = False

    def __call__(self) -> None:
        self._source._ack(self)


class MqttSource:
    """Readings from MQTT devices. ``await source.run()``; ``source.stop()`` to end."""

    def __init__(
        self,
        conn: MqttConnection,
        devices: Sequence[DeviceConfig],
        sink: ReadingSink,
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
        self._pending: deque[_Batch] = deque()
        self._loop_thread: int | None = None
        self.messages = 0
        self.readings = 0
        self.acked = 0

    async def run(self) -> None:
        self._loop_thread = threading.get_ident()
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
        self._pending = deque()  # acks of an earlier connection are void
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
    def ingest(self, messages: list[InMessage]) -> None:
        """Decode one wakeup's messages and hand them to the sink with one ack handle."""
        now = self._wall()
        mono = self._mono()
        route = self.router.route
        counter = self.counter
        health = self.health
        readings: list[Reading] = []
        origins: list[InMessage] = []
        mids: list[int] = []
        for message in messages:
            if message.qos == 1:
                mids.append(message.mid)
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
                readings += decoded
                origins += [message] * len(decoded)
                if health is not None:
                    health.seen(decoder.device_id, mono, now)
        self.messages += len(messages)
        if self._clock_synced is not None and not self._clock_synced():
            for reading in readings:
                reading.clock_synced = False
        batch = _Batch(self, self.link.generation, mids, origins)
        self._pending.append(batch)
        if readings:
            self.readings += len(readings)
            self._sink(readings, batch)
        else:
            self._ack_local(batch)

    # ------------------------------------------------------------------ acks
    def _ack(self, batch: _Batch) -> None:
        loop = self.link._loop
        if self._loop_thread is None or threading.get_ident() == self._loop_thread or loop is None:
            self._ack_local(batch)
        else:
            try:
                loop.call_soon_threadsafe(self._ack_local, batch)
            except RuntimeError:
                # the loop is closed: the connection is gone, the broker will redeliver
                batch.acked = True

    def _ack_local(self, batch: _Batch) -> None:
        if batch.acked:
            return
        batch.acked = True
        link = self.link
        if batch.generation != link.generation or not link.connected:
            return
        pending = self._pending
        client = link.client
        mids: list[int] = []
        while pending and pending[0].acked:
            done = pending.popleft()
            if done.generation == link.generation:
                mids += done.mids
        if mids:
            client.ack_many(mids)
            self.acked += len(mids)
            link.after_io()

    @property
    def unacked_batches(self) -> int:
        return len(self._pending)


async def run_until_stopped(source: MqttSource, stop: asyncio.Event) -> None:
    """Run ``source`` until ``stop`` is set (a helper for scripts and the bench)."""
    task = asyncio.create_task(source.run())
    await stop.wait()
    source.stop()
    await task
