"""The Kafka side: ``serve`` (a consumer group member, forever) and ``rebuild`` (a replay).

One loop for both: consume a batch, fold it (:class:`Projector`), commit the changes and
the batch's offsets in one store transaction. Kafka's own offset commits are never used:
at start and on every assignment the consumer seeks to the offsets in the store, so a
batch is in the view exactly once whether the process was killed before or after its
transaction. ``read_committed`` hides the gateways' aborted transactions.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import structlog
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from fleet.config import FleetConfig, consumer_settings
from fleet.errors import FleetConsumerError, StaleOffsetsError
from fleet.model import Changes, Incoming
from fleet.projection import Projector
from fleet.store import Store

__all__ = ["FleetConsumer", "Progress", "Stats"]

_log = structlog.get_logger("edgegw.fleet")
_EOF = KafkaError._PARTITION_EOF
TP = tuple[str, int]


@dataclass(slots=True)
class Stats:
    """What ``/metrics`` shows; written by the consumer thread, read by the web threads."""

    events: int = 0
    dead_letters: int = 0
    duplicates: int = 0
    batches: int = 0
    stale_batches: int = 0
    transitions: int = 0
    started: float = field(default_factory=time.time)
    position: dict[TP, int] = field(default_factory=dict)
    high: dict[TP, int] = field(default_factory=dict)

    def lag(self) -> dict[TP, int]:
        return {tp: max(0, self.high.get(tp, pos) - pos) for tp, pos in self.position.items()}


@dataclass(frozen=True, slots=True)
class Progress:
    events: int
    total: int
    """Records in the topics when the replay started (an upper bound: markers count too)."""
    partitions_done: int
    partitions: int
    elapsed: float


def _incoming(msg: Any) -> Incoming:
    headers = dict(msg.headers() or ())
    get = headers.get
    return Incoming(msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value(),
                    get("ce_id"), get("ce_type"), get("ce_source"))  # fmt: skip


class FleetConsumer:
    """Consumes the gateways' topics into a :class:`Store` through a :class:`Projector`."""

    def __init__(self, config: FleetConfig, store: Store, projector: Projector,
                 *, clock: Callable[[], float] = time.time) -> None:  # fmt: skip
        self.config = config
        self.store = store
        self.projector = projector
        self.clock = clock
        self.stats = Stats()
        self._expected: dict[TP, int | None] = {}
        self._owned: set[TP] = set()
        self._at_end: set[TP] = set()
        self._consumer: Consumer | None = None
        self._last_tick = 0.0
        self._last_prune = 0.0
        self._hb_topic = config.kafka.topics.heartbeats

    # ------------------------------------------------------------------ assignment
    def _load(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        state = self.store.load()
        self.projector.load(state.high_water, state.seen_ids, state.gateways)
        for p in partitions:
            stored = state.offsets.get((p.topic, p.partition))
            self._expected[(p.topic, p.partition)] = stored
            p.offset = OFFSET_BEGINNING if stored is None else stored
            self.stats.position[(p.topic, p.partition)] = stored or 0
        return partitions

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        consumer.assign(self._load(partitions))
        self._owned = {(p.topic, p.partition) for p in partitions}
        self._at_end.clear()
        _log.info("partitions assigned", partitions=sorted(f"{t}[{p}]" for t, p in self._owned))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for p in partitions:
            tp = (p.topic, p.partition)
            self._owned.discard(tp)
            self._at_end.discard(tp)
            self.stats.position.pop(tp, None)
            self.stats.high.pop(tp, None)
        consumer.unassign()
        _log.info("partitions revoked", count=len(partitions))

    def _reseek(self) -> None:
        """After a fenced batch: the store is the truth again."""
        assert self._consumer is not None
        parts = self._load([TopicPartition(t, p) for t, p in sorted(self._owned)])
        self._consumer.assign(parts)
        self._at_end.clear()

    # ------------------------------------------------------------------ one batch
    def _batch(self, consumer: Consumer, timeout: float) -> int:
        try:
            msgs = consumer.consume(num_messages=self.config.batch_size, timeout=timeout)
        except KafkaException as exc:
            raise FleetConsumerError(f"Kafka consumer failed: {exc}") from exc
        records: list[Incoming] = []
        moves: dict[TP, tuple[int | None, int]] = {}
        position = self.stats.position
        for msg in cast("list[Any]", msgs):  # the stubs type every field Optional
            err = msg.error()
            tp = (msg.topic(), msg.partition())
            if err is not None:
                if err.code() == _EOF:
                    self._at_end.add(tp)
                    position[tp] = max(position.get(tp, 0), msg.offset())
                elif err.fatal():
                    raise FleetConsumerError(f"Kafka consumer failed: {err}")
                else:
                    _log.warning("kafka", error=str(err))
                continue
            offset = msg.offset()
            expected = self._expected.get(tp)
            if expected is not None and offset < expected:
                continue  # before the stored offset: in the view already
            records.append(_incoming(msg))
            move = moves.get(tp)
            moves[tp] = (expected, offset + 1) if move is None else (move[0], offset + 1)
        changes = self.projector.apply(records) if records else Changes()
        now = self.clock()
        if now - self._last_tick >= self.config.tick_interval and self._caught_up():
            self._last_tick = now
            self.projector.tick(now, self._owned, changes)
        if not changes and not moves:
            return 0
        try:
            self.store.commit(changes, moves)
        except StaleOffsetsError as exc:
            self.stats.stale_batches += 1
            _log.warning("batch fenced: another instance moved the offsets; seeking again", error=str(exc))
            self._reseek()
            return 0
        for tp, (_, new) in moves.items():
            self._expected[tp] = new
            position[tp] = max(position.get(tp, 0), new)  # an end-of-partition in this batch may be further
        self._count(changes, len(records))
        return len(records)

    def _caught_up(self) -> bool:
        """Every heartbeat partition we own has been read to its end since it was assigned:
        a gateway's silence is real, not a backlog we have not read yet."""
        return all(tp in self._at_end for tp in self._owned if tp[0] == self._hb_topic)

    def _count(self, changes: Changes, records: int) -> None:
        s = self.stats
        s.batches += 1
        s.events += records - len(changes.dead_letters) - changes.duplicates
        s.dead_letters += len(changes.dead_letters)
        s.duplicates += changes.duplicates
        s.transitions += len(changes.transitions)
        for t in changes.transitions:
            _log.info("gateway online" if t.online else "gateway offline", gateway=t.gateway_id, at=t.at)

    def _watermarks(self, consumer: Consumer) -> None:
        for tp in list(self._owned):
            try:
                _low, high = consumer.get_watermark_offsets(TopicPartition(*tp), cached=True)
            except KafkaException:
                continue
            if high >= 0:
                self.stats.high[tp] = high

    def _prune(self, now: float) -> None:
        if now - self._last_prune >= 60.0:
            self._last_prune = now
            self.store.prune(now - self.config.rollup_retention)

    # ------------------------------------------------------------------ serve
    def serve(self, stop: threading.Event) -> None:
        """Member of the consumer group until ``stop`` is set."""
        consumer = self._consumer = Consumer(consumer_settings(self.config))
        try:
            consumer.subscribe(self.config.kafka.topic_names(), on_assign=self._on_assign,
                               on_revoke=self._on_revoke, on_lost=self._on_revoke)  # fmt: skip
            last_marks = 0.0
            while not stop.is_set():
                self._batch(consumer, timeout=min(0.5, self.config.tick_interval))
                now = time.monotonic()
                if now - last_marks >= 1.0:
                    last_marks = now
                    self._watermarks(consumer)
                    self._prune(self.clock())
        finally:
            consumer.close()
            self._consumer = None

    # ------------------------------------------------------------------ rebuild
    def rebuild(self, progress: Callable[[Progress], None] | None = None,
                stop: threading.Event | None = None) -> Stats:  # fmt: skip
        """Replays every partition of the topics from the store's offsets (offset 0 in a fresh
        store) to the end it finds, then ticks once; returns the counts."""
        group = f"{self.config.kafka.group_id}-rebuild-{int(time.time() * 1000)}"
        consumer = self._consumer = Consumer(consumer_settings(self.config, group_id=group))
        started = time.monotonic()
        try:
            parts, total = self._all_partitions(consumer)
            consumer.assign(self._load(parts))
            self._owned = {(p.topic, p.partition) for p in parts}
            last = 0.0
            while not self._owned <= self._at_end and not (stop and stop.is_set()):
                self._batch(consumer, timeout=0.5)
                if progress is not None and time.monotonic() - last >= 1.0:
                    last = time.monotonic()
                    progress(Progress(self.stats.events, total, len(self._at_end), len(self._owned),
                                      last - started))  # fmt: skip
            now = self.clock()
            changes = self.projector.tick(now, self._owned)
            if changes:
                self.store.commit(changes, {})
            self.store.prune(now - self.config.rollup_retention)
            self._count(changes, 0)
            if progress is not None:
                progress(Progress(self.stats.events, total, len(self._at_end), len(self._owned),
                                  time.monotonic() - started))  # fmt: skip
        finally:
            consumer.close()
            self._consumer = None
        return self.stats

    def _all_partitions(self, consumer: Consumer) -> tuple[list[TopicPartition], int]:
        parts: list[TopicPartition] = []
        total = 0
        for topic in self.config.kafka.topic_names():
            try:
                meta = consumer.list_topics(topic, timeout=10)
            except KafkaException as exc:
                raise FleetConsumerError(f"cannot list the partitions of {topic}: {exc}") from exc
            info = meta.topics.get(topic)
            if info is None or info.error is not None:
                _log.warning("topic not found; skipped", topic=topic)
                continue
            for pid in info.partitions:
                tp = TopicPartition(topic, pid)
                low, high = consumer.get_watermark_offsets(tp, timeout=10)
                total += max(0, high - low)
                parts.append(tp)
        return parts, total
