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

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bridge.checkpoint import Checkpoint
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

# Exported name -> (its module, its name there), imported on first use (PEP 562): `from bridge.config import
# BridgeConfig` (what the config models need) loads neither the spool nor the forwarder
# (and confluent_kafka), and a process loads only the parts it uses.
_EXPORTS: dict[str, tuple[str, str]] = {
    "Checkpoint": ("bridge.checkpoint", "Checkpoint"),
    "BridgeConfig": ("bridge.config", "BridgeConfig"),
    "KafkaConfig": ("bridge.config", "KafkaConfig"),
    "KafkaSecrets": ("bridge.config", "KafkaSecrets"),
    "KafkaSecurity": ("bridge.config", "KafkaSecurity"),
    "SaslConfig": ("bridge.config", "SaslConfig"),
    "SecretRef": ("bridge.config", "SecretRef"),
    "SpoolConfig": ("bridge.config", "SpoolConfig"),
    "TlsConfig": ("bridge.config", "TlsConfig"),
    "TopicsConfig": ("bridge.config", "TopicsConfig"),
    "CE_TYPES": ("bridge.envelope", "CE_TYPES"),
    "HEARTBEAT_TYPE": ("bridge.envelope", "HEARTBEAT_TYPE"),
    "Envelope": ("bridge.envelope", "Envelope"),
    "Record": ("bridge.envelope", "Record"),
    "Forwarder": ("bridge.forwarder", "Forwarder"),
    "ForwarderStats": ("bridge.forwarder", "ForwarderStats"),
    "SendResult": ("bridge.forwarder", "SendResult"),
    "Uplink": ("bridge.forwarder", "Uplink"),
    "Kind": ("bridge.policy", "Kind"),
    "Priority": ("bridge.policy", "Priority"),
    "lane_priorities": ("bridge.policy", "lane_priorities"),
    "DeadInput": ("bridge.spool", "DeadInput"),
    "DeadLetter": ("bridge.spool", "DeadLetter"),
    "OnDurable": ("bridge.spool", "OnDurable"),
    "Spool": ("bridge.spool", "Spool"),
    "SpoolStats": ("bridge.spool", "SpoolStats"),
    "SpoolStatus": ("bridge.status", "SpoolStatus"),
    "read_status": ("bridge.status", "read_status"),
}


def __getattr__(name: str) -> Any:
    where = _EXPORTS.get(name)
    if where is None:
        raise AttributeError(f"module 'bridge' has no attribute {name!r}")
    value = getattr(import_module(where[0]), where[1])
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


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
