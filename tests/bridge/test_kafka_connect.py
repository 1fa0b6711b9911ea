"""How the exactly-once uplink connects (pure: librdkafka's Producer replaced by a recorder)."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from bridge import kafka
from bridge.config import KafkaConfig


class _Recorder:
    """Stands in for confluent_kafka.Producer: notes the calls connect() makes, in order."""

    calls: ClassVar[list[tuple[str, Any]]] = []

    def __init__(self, conf: dict[str, Any]) -> None:
        self.calls.append(("new", conf.get("transactional.id")))

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> None:
        self.calls.append(("list_topics", topic))

    def init_transactions(self, timeout: float) -> None:
        self.calls.append(("init_transactions", None))


def test_the_transactional_producer_is_connected_before_it_looks_for_its_coordinator(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # librdkafka asks for the transaction coordinator only through a connected broker and,
    # finding none, asks again 500 ms later: two metadata requests of the readings topic
    # first (the bootstrap connection, then one to a broker the cluster named)
    _Recorder.calls = []
    monkeypatch.setattr(kafka, "Producer", _Recorder)
    monkeypatch.setattr(kafka, "ensure_checkpoint_topic", lambda *a, **kw: None)
    monkeypatch.setattr(kafka, "read_checkpoint", lambda *a, **kw: None)
    config = KafkaConfig(bootstrap="127.0.0.1:9", topics={"readings": "site.readings"})

    assert kafka.KafkaUplink(config, "gw-1").connect() is None

    assert _Recorder.calls == [
        ("new", "edgegw-gw-1"),
        ("list_topics", "site.readings"),
        ("list_topics", "site.readings"),
        ("init_transactions", None),
    ]
