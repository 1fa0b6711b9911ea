"""The central side's Kafka edge (``edgegw deploy``, ``edgegw command``): read a compacted
topic to its end, write one record, and watch an events topic from "now" on.

librdkafka behind small functions; every library error becomes an :class:`UplinkError`.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition

# confluent-kafka's bundled stubs leave NewTopic out of confluent_kafka.admin's exports
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from gateway.errors import UplinkError

__all__ = ["CloudEvent", "EventWatch", "ensure_compacted_topic", "latest_per_key", "produce", "recent_keys"]


def _consumer(conf: Mapping[str, Any]) -> Consumer:
    return Consumer({**conf, "group.id": f"edgegw-cli-{uuid.uuid4().hex[:12]}", "enable.auto.commit": False,
                     "enable.partition.eof": True, "isolation.level": "read_committed",
                     "allow.auto.create.topics": False})  # fmt: skip


def _ends(consumer: Consumer, topic: str, timeout: float) -> dict[int, tuple[int, int]] | None:
    md = consumer.list_topics(topic, timeout=timeout)
    meta = md.topics.get(topic)
    if meta is None or meta.error is not None:
        return None
    out = {}
    for part in meta.partitions:
        out[part] = consumer.get_watermark_offsets(TopicPartition(topic, part), timeout=timeout, cached=False)
    return out


def ensure_compacted_topic(conf: Mapping[str, Any], topic: str, *, timeout: float = 30.0) -> None:
    """Create ``topic`` compacted if it is not there (best effort: ACLs may forbid it)."""
    admin = AdminClient(dict(conf))
    try:
        meta = admin.list_topics(topic, timeout=timeout).topics.get(topic)
        if meta is not None and meta.error is None:
            return
        new = NewTopic(topic, num_partitions=1, replication_factor=-1, config={"cleanup.policy": "compact"})
        admin.create_topics([new])[topic].result(timeout=timeout)
    except KafkaException as exc:
        err = exc.args[0]
        if not (isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS):
            raise UplinkError(f"cannot create topic {topic}: {err}") from exc


def latest_per_key(conf: Mapping[str, Any], topic: str, *, timeout: float = 30.0) -> dict[str, bytes]:
    """The newest value of each key in ``topic`` (read to its end; tombstones delete)."""
    consumer = _consumer(conf)
    out: dict[str, bytes] = {}
    try:
        ends = _ends(consumer, topic, timeout)
        if not ends:
            return out
        waiting = {p for p, (lo, hi) in ends.items() if hi > lo}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in waiting])
        deadline = time.monotonic() + timeout
        while waiting:
            if time.monotonic() > deadline:
                raise UplinkError(f"{topic}: not read to its end within {timeout:.0f} s")
            for msg in consumer.consume(500, 0.5):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        waiting.discard(int(msg.partition() or 0))
                        continue
                    raise UplinkError(f"{topic}: {err.str()}")
                key = (msg.key() or b"").decode("utf-8", "replace")
                value = msg.value()
                if isinstance(value, bytes):
                    out[key] = value
                else:
                    out.pop(key, None)
    except KafkaException as exc:
        raise UplinkError(f"cannot read {topic}: {exc.args[0]}") from exc
    finally:
        consumer.close()
    return out


def produce(conf: Mapping[str, Any], topic: str, key: str, value: bytes, *, timeout: float = 30.0) -> None:
    """Write one record and wait until Kafka has it."""
    producer = Producer({**conf, "enable.idempotence": True, "acks": "all"})
    failure: list[KafkaError] = []

    def delivered(err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            failure.append(err)

    try:
        producer.produce(topic, value=value, key=key.encode(), on_delivery=delivered)
        left = producer.flush(timeout)
    except KafkaException as exc:
        raise UplinkError(f"cannot write to {topic}: {exc.args[0]}") from exc
    if failure:
        raise UplinkError(f"cannot write to {topic}: {failure[0].str()}")
    if left:
        raise UplinkError(f"cannot write to {topic}: not acknowledged within {timeout:.0f} s")


@dataclass(frozen=True, slots=True)
class CloudEvent:
    type: str
    source: str
    data: dict[str, Any]


class EventWatch:
    """CloudEvents appearing in ``topic`` from the moment it is made (committed ones only)."""

    def __init__(self, conf: Mapping[str, Any], topic: str, *, timeout: float = 30.0) -> None:
        self.topic = topic
        self._consumer = _consumer(conf)
        try:
            ends = _ends(self._consumer, topic, timeout) or {0: (0, 0)}
            self._consumer.assign([TopicPartition(topic, p, hi) for p, (_lo, hi) in ends.items()])
        except KafkaException as exc:
            self._consumer.close()
            raise UplinkError(f"cannot read {topic}: {exc.args[0]}") from exc

    def poll(self, seconds: float) -> Iterator[CloudEvent]:
        try:
            messages = self._consumer.consume(500, seconds)
        except KafkaException as exc:
            raise UplinkError(f"cannot read {self.topic}: {exc.args[0]}") from exc
        for msg in messages:
            if msg.error() is not None:
                continue
            raw = msg.headers() or []
            pairs: list[tuple[str, Any]] = list(raw.items()) if isinstance(raw, dict) else list(raw)
            headers = {
                str(k): v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for k, v in pairs
            }
            try:
                data = json.loads(msg.value() or b"null")
            except ValueError:
                continue
            if isinstance(data, dict):
                yield CloudEvent(headers.get("ce_type", ""), headers.get("ce_source", ""), data)

    def close(self) -> None:
        with contextlib.suppress(KafkaException, RuntimeError):
            self._consumer.close()


def recent_keys(
    conf: Mapping[str, Any], topic: str, *, since: float, timeout: float = 30.0
) -> dict[str, bytes]:
    """The newest value per key among the records of ``topic`` written since ``since``
    (epoch seconds): e.g. the gateways whose heartbeat came in the last minutes."""
    consumer = _consumer(conf)
    out: dict[str, bytes] = {}
    try:
        ends = _ends(consumer, topic, timeout)
        if not ends:
            return out
        asked = [TopicPartition(topic, p, int(since * 1000)) for p in ends]
        starts = consumer.offsets_for_times(asked, timeout=timeout)
        waiting = {tp.partition for tp in starts if tp.offset >= 0 and tp.offset < ends[tp.partition][1]}
        consumer.assign([tp for tp in starts if tp.partition in waiting])
        deadline = time.monotonic() + timeout
        while waiting and time.monotonic() < deadline:
            for msg in consumer.consume(500, 0.5):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        waiting.discard(int(msg.partition() or 0))
                    continue
                value = msg.value()
                if isinstance(value, bytes):
                    out[(msg.key() or b"").decode("utf-8", "replace")] = value
    except KafkaException as exc:
        raise UplinkError(f"cannot read {topic}: {exc.args[0]}") from exc
    finally:
        consumer.close()
    return out
