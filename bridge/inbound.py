"""Kafka to the gateway: topics read with assigned partitions, no consumer group.

Why no consumer group: the desired-state topic is a table (compacted, newest document
per key) that a gateway must read from the beginning at every start anyway, so committed
offsets would buy nothing; every partition is assigned because the central side's
partitioner is not ours to know; and a group would need a Group ACL per gateway and
rebalances when gateways come and go. The commands topic is read from offsets the
gateway keeps itself in its state directory (with the ids of the commands it took), so
the at-most-once record and the position move together. A gateway's Kafka user then
needs READ and DESCRIBE on these two topics only (docs/fleet.md, "Locking it down").

Runtime API::

    reader = InboundReader(conf, ["edgegw.desired", "edgegw.commands.in"], start=..., deliver=...)
    reader.start()   # a thread of its own
    reader.stop()

``deliver(records, caught_up)`` is called from the reader's thread with the records of
one poll whose key is in ``keys`` (others are skipped and counted) and the topics whose
every partition has been read to the end once (a missing topic counts as read).
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from common.backoff import Backoff

if TYPE_CHECKING:
    from confluent_kafka import Consumer

__all__ = ["Inbound", "InboundReader"]

_log = structlog.get_logger("edgegw.bridge.inbound")

METADATA_EVERY_S = 5.0
"""How often the reader looks for topics and partitions that appeared."""


@dataclass(frozen=True, slots=True)
class Inbound:
    topic: str
    partition: int
    offset: int
    key: str
    value: bytes | None
    """None: a tombstone (the key was deleted)."""


Deliver = Callable[[list[Inbound], frozenset[str]], None]


class InboundReader:
    def __init__(
        self,
        conf: Mapping[str, Any],
        topics: Sequence[str],
        *,
        keys: frozenset[str],
        start: Callable[[str, int], int],
        deliver: Deliver,
        backoff: Backoff | None = None,
    ) -> None:
        self._conf = {
            **conf,
            # a group id is required by the client; it is never joined nor committed to
            "group.id": f"edgegw-inbound-{uuid.uuid4().hex[:12]}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
            "allow.auto.create.topics": False,
        }
        self.topics = tuple(topics)
        self.keys = keys
        self._start = start
        self._deliver = deliver
        self._backoff = backoff or Backoff(0.5, 30.0)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next: dict[tuple[str, int], int] = {}  # where to resume after a reconnect
        self._eof: dict[str, set[int]] = {}
        self._parts: dict[str, set[int]] = {}
        self._caught_up: set[str] = set()
        self.state = "starting"
        self.last_error: str | None = None
        self.skipped = 0
        """Records under other gateways' keys (never acted on)."""
        self.received = 0

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="edgegw-inbound", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.state = "stopped"

    @property
    def caught_up(self) -> frozenset[str]:
        return frozenset(self._caught_up)

    # ------------------------------------------------------------------ the thread
    def _run(self) -> None:
        from confluent_kafka import Consumer, KafkaError, KafkaException  # noqa: PLC0415 - librdkafka only when used

        while not self._stop.is_set():
            consumer: Consumer | None = None
            try:
                consumer = Consumer(dict(self._conf))
                self._session(consumer)
            except KafkaException as exc:
                err = exc.args[0]
                self.last_error = err.str() if isinstance(err, KafkaError) else str(exc)
                self.state = "backoff"
                _log.warning("cloud inbound: Kafka unavailable; retrying", error=self.last_error)
                self._stop.wait(self._backoff.next())
            finally:
                if consumer is not None:
                    with contextlib.suppress(KafkaException, RuntimeError):  # against a gone broker
                        consumer.close()

    def _session(self, consumer: Consumer) -> None:
        from confluent_kafka import KafkaError, KafkaException  # noqa: PLC0415

        self._parts.clear()
        next_metadata = 0.0
        while not self._stop.is_set():
            if time.monotonic() >= next_metadata:
                self._assign_new(consumer)
                next_metadata = time.monotonic() + METADATA_EVERY_S
                self.state = "up"
                self._backoff.reset()
            messages = consumer.consume(500, 0.5)
            records: list[Inbound] = []
            changed = False
            for msg in messages:
                topic, part, offset = str(msg.topic()), int(msg.partition() or 0), msg.offset()
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        changed |= self._at_end(topic, part)
                        continue
                    if err.fatal():
                        raise KafkaException(err)
                    # the client retries by itself (a broker away, a topic not readable yet); a
                    # group that may not be described does not matter: no group is ever joined
                    quiet = err.code() == KafkaError.GROUP_AUTHORIZATION_FAILED
                    if err.str() != self.last_error and not quiet:
                        _log.warning("cloud inbound: Kafka says", topic=topic, error=err.str())
                    self.last_error = err.str()
                    continue
                assert offset is not None
                self._next[(topic, part)] = offset + 1
                self.received += 1
                raw_key = msg.key()
                key = raw_key.decode("utf-8", "replace") if isinstance(raw_key, bytes) else ""
                if key not in self.keys:
                    self.skipped += 1
                    continue
                value = msg.value()
                records.append(Inbound(topic, part, offset, key, value if isinstance(value, bytes) else None))
            if records or changed:
                self._deliver(records, frozenset(self._caught_up))

    def _assign_new(self, consumer: Consumer) -> None:
        """Assign partitions not assigned yet (topics and partitions may appear later)."""
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition  # noqa: PLC0415

        add: list[TopicPartition] = []
        for topic in self.topics:
            md = consumer.list_topics(topic, timeout=10.0)
            meta = md.topics.get(topic)
            if meta is None or meta.error is not None:
                if topic not in self._caught_up:  # nothing to read (yet): read to its end
                    self._caught_up.add(topic)
                    self._deliver([], frozenset(self._caught_up))
                continue
            known = self._parts.setdefault(topic, set())
            for part in sorted(set(meta.partitions) - known):
                start = self._next.get((topic, part))
                offset = start if start is not None else self._start(topic, part)
                add.append(TopicPartition(topic, part, offset if offset >= 0 else OFFSET_BEGINNING))
                known.add(part)
        if add:
            consumer.incremental_assign(add)

    def _at_end(self, topic: str, part: int) -> bool:
        eof = self._eof.setdefault(topic, set())
        eof.add(part)
        if topic not in self._caught_up and eof >= self._parts.get(topic, set()):
            self._caught_up.add(topic)
            return True
        return False
