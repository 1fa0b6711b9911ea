"""Store and forward: the durable SQLite spool, the Kafka forwarder, the CloudEvents envelope.

See docs/bridge.md. The runtime wires it::

    spool = Spool.open(cfg.spool, lanes=lane_priorities(cfg.kafka.topics.of_kind()))
    forwarder = Forwarder.for_kafka(spool, cfg.kafka, gateway_id=gid, secrets=resolved)
    forwarder.start()
    ...
    spool.submit(items, on_durable, on_void=void, marks=taken, state=rule_changes)
    ...
    forwarder.stop(); spool.close()
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bridge.config import (
    BridgeConfig,
    KafkaConfig,
    KafkaSecrets,
    KafkaSecurity,
    SaslConfig,
    SecretRef,
    SpoolConfig,
    TlsConfig,
    TopicsConfig,
)
from bridge.envelope import CE_TYPES, HEARTBEAT_TYPE, Envelope, Record
from bridge.forwarder import Forwarder, ForwarderStats, SendResult, Uplink
from bridge.policy import Kind, Priority, lane_priorities
from bridge.spool import DeadInput, DeadLetter, OnDurable, Spool, SpoolStats
from bridge.status import SpoolStatus, read_status

if TYPE_CHECKING:
    from bridge.checkpoint import Checkpoint


def __getattr__(name: str) -> Any:
    """``Checkpoint`` on first use: bridge.checkpoint loads confluent_kafka (librdkafka, ~9 MiB),
    which ``edgegw run`` leaves to its uplink process (bridge/uplink.py)."""
    if name == "Checkpoint":
        from bridge.checkpoint import Checkpoint  # noqa: PLC0415

        return Checkpoint
    raise AttributeError(f"module 'bridge' has no attribute {name!r}")


__all__ = [
    "CE_TYPES",
    "HEARTBEAT_TYPE",
    "BridgeConfig",
    "Checkpoint",
    "DeadInput",
    "DeadLetter",
    "Envelope",
    "Forwarder",
    "ForwarderStats",
    "KafkaConfig",
    "KafkaSecrets",
    "KafkaSecurity",
    "Kind",
    "OnDurable",
    "Priority",
    "Record",
    "SaslConfig",
    "SecretRef",
    "SendResult",
    "Spool",
    "SpoolConfig",
    "SpoolStats",
    "SpoolStatus",
    "TlsConfig",
    "TopicsConfig",
    "Uplink",
    "lane_priorities",
    "read_status",
]
