"""The ``bridge:`` section of the gateway config: spool, Kafka uplink, security, topics.

Validated once at load time (the gateway config of issue 6 composes :class:`BridgeConfig`);
the hot path then uses plain values. Secrets are never written here: a :class:`SecretRef`
names a file, an environment variable or a systemd credential, and the runtime resolves
it (``gateway.secrets.resolve_secret``) into the :class:`KafkaSecrets` the forwarder takes.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ByteSize, ConfigDict, Field, SecretStr, field_validator, model_validator

from bridge.policy import Kind
from common.configtypes import Duration, SecretRef, parse_duration

__all__ = [
    "BridgeConfig",
    "KafkaConfig",
    "KafkaSecrets",
    "KafkaSecurity",
    "SaslConfig",
    "SecretRef",
    "SpoolConfig",
    "TlsConfig",
    "TopicsConfig",
    "parse_duration",
]

class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SpoolConfig(_Model):
    path: Path = Path("/var/lib/edgegw/spool.db")
    max_bytes: ByteSize = ByteSize(256 * 1024 * 1024)
    """Cap on row bytes (data + key + 32 per row); accepts 256MiB, 1GB, plain integers."""
    ttl: Duration = 7 * 86400.0
    """Rows older than this (time spooled) are dropped, counted as ``ttl``."""
    synchronous: Literal["normal", "full"] = "full"
    """``full`` (default): a group is on disk (fsync) before its PUBACKs leave, so a power cut
    loses nothing acknowledged (on MQTT 5 a few short groups share one fsync, and the uplink
    ships only what was synced: docs/bridge.md, "Deferred syncs"). ``normal``: survives a
    killed process, but a power cut loses the commits since the last WAL checkpoint (up to
    ~1,000 pages: seconds of readings), reported at the next start (docs/bridge.md, "Power
    cuts")."""
    commit_interval: Duration = 0.002
    """A group is committed when its first row has waited this long..."""
    commit_rows: int = Field(2000, ge=1)
    """...or when it holds this many rows, whichever comes first."""
    commit_max_delay: Duration = Field(2.0, ge=0, le=10)
    """A group gathers on after ``commit_interval`` until it holds ``commit_batch_rows`` rows or
    ``commit_batch_acks`` QoS 1 messages waiting for their PUBACK (a broker sends no more
    than its in-flight window), nothing came for a while, or its first batch has waited
    this long (10 s at most; 100 ms at most above ``commit_batch_rows`` per second, 256
    rows/s by default): one commit every 2 s at a house's trickle instead of one per MQTT
    message (CPU, fsyncs and SD card wear: at 100 readings/s 2 s write 122 bytes a reading,
    1 s 161; docs/bridge.md). QoS 1 PUBACKs wait for the commit, so they leave up to this
    much later, and the uplink ships a reading up to this much later; commands never wait
    for the spool, and a lone event after a quiet spell is committed at once. 0 (or no
    more than ``commit_interval``): commit every window."""
    commit_batch_rows: int = Field(256, ge=1)
    """A group gathered on is committed once it holds this many rows."""
    commit_batch_acks: int = Field(16, ge=1)
    """...or this many QoS 1 messages waiting for their PUBACK. Keep it below the broker's
    in-flight window: a group that waits for more messages than the broker will send before
    it is acknowledged holds back the readings behind the window (and the rules they fire).
    Unless set here, the gateway takes half its MQTT connection's window: on MQTT 5 the
    ``receive_maximum`` edgegw announces (1000 by default: 500 here); on 3.1.1 the broker's
    own (Mosquitto's ``max_inflight_messages``, 20 by default), which a client cannot read,
    so 16. With MQTT 5 a trickle of QoS 1 readings commits once per ``commit_max_delay``
    (docs/bridge.md, "SD-card wear")."""
    dedup_window: Duration = 7 * 86400.0
    """No longer used (kept so that older configs load): a redelivery is recognised by its
    MQTT packet id with no time limit (docs/bridge.md, "Redelivery")."""
    dedup_entries: int = Field(16384, ge=0, le=60000)
    """How many MQTT packet ids (with the digest of the message last taken under each) the
    redelivery check keeps; far more than a broker's in-flight window."""
    max_pages: int | None = Field(None, ge=16)
    """SQLite ``max_page_count`` (a hard file size limit in pages of ``page_size``); none by default."""
    wal_autocheckpoint: int = Field(1000, ge=16)
    """Pages in the WAL before SQLite copies them into the database file."""
    page_size: Literal[1024, 2048, 4096, 8192, 16384, 32768, 65536] = 1024
    """SQLite page size of a *new* spool file (an existing file keeps its own). Every commit
    writes at least one page to the WAL: at a trickle (a house, commits of a few readings)
    smaller pages write fewer bytes per reading (SD-card wear, docs/bridge.md); bulk
    appends and drains prefer larger ones. ``max_pages`` and ``wal_autocheckpoint`` count
    pages of this size."""
    reserve_bytes: ByteSize = ByteSize(1024 * 1024)
    """A ballast file beside the spool, given back when the disk is full so that SQLite can
    checkpoint and delete (which need room too); made again once there is room. 0: none."""


class TlsConfig(_Model):
    ca_file: Path | None = None
    """CA bundle that signed the brokers' certificates; the system store when omitted."""
    cert_file: Path | None = None
    """Client certificate (PEM) for mutual TLS."""
    key_file: Path | None = None
    key_password: SecretRef | None = None
    verify_hostname: bool = True

    @model_validator(mode="after")
    def _pair(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (client certificate)")
        if self.key_password is not None and self.key_file is None:
            raise ValueError("key_password needs key_file")
        return self


class SaslConfig(_Model):
    mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = "SCRAM-SHA-512"
    username: str = Field(min_length=1)
    password: SecretRef


class KafkaSecurity(_Model):
    protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl: SaslConfig | None = None
    tls: TlsConfig | None = None

    @model_validator(mode="after")
    def _consistent(self) -> KafkaSecurity:
        needs_sasl = self.protocol.startswith("SASL")
        if needs_sasl and self.sasl is None:
            raise ValueError(f"protocol {self.protocol} needs a sasl: section")
        if not needs_sasl and self.sasl is not None:
            raise ValueError(
                f"a sasl: section needs protocol SASL_SSL (or SASL_PLAINTEXT), not {self.protocol}"
            )
        if self.tls is not None and not self.protocol.endswith("SSL"):
            raise ValueError(f"a tls: section needs protocol SSL or SASL_SSL, not {self.protocol}")
        return self


_KAFKA_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


class TopicsConfig(_Model):
    readings: str = "edgegw.readings"
    events: str = "edgegw.events"
    commands: str = "edgegw.commands"
    heartbeats: str = "edgegw.heartbeats"
    checkpoints: str = "edgegw.checkpoints"
    """Compacted; one record per gateway (exactly-once mode only)."""

    @field_validator("readings", "events", "commands", "heartbeats", "checkpoints")
    @classmethod
    def _kafka_name(cls, value: str) -> str:
        # the brokers refuse any other name, but only once the uplink tries to send
        if not _KAFKA_TOPIC.fullmatch(value):
            raise ValueError(
                f"invalid Kafka topic {value!r}: letters, digits, '.', '_' and '-' only "
                "(no spaces, no wildcards), at most 249 characters"
            )
        return value

    def of_kind(self) -> dict[Kind, str]:
        return {
            Kind.READING: self.readings,
            Kind.RULE_FIRED: self.events,
            Kind.RULE_CLEARED: self.events,
            Kind.RULE_EMITTED: self.events,
            Kind.RULE_STALE: self.events,
            Kind.COMMAND: self.commands,
            Kind.DEPLOYMENT_APPLIED: self.events,
            Kind.DEPLOYMENT_REJECTED: self.events,
            Kind.DEPLOYMENT_ROLLED_BACK: self.events,
            Kind.COMMAND_RESULT: self.events,
        }


_FORBIDDEN_OVERRIDES = ("sasl.", "ssl.", "security.protocol", "transactional.id", "enable.idempotence")


class KafkaConfig(_Model):
    bootstrap: str = Field(min_length=1)
    """``host:port[,host:port...]``"""
    mode: Literal["exactly_once", "at_least_once"] = "exactly_once"
    security: KafkaSecurity = KafkaSecurity()
    topics: TopicsConfig = TopicsConfig()
    batch_rows: int = Field(20_000, ge=1)
    """Spool rows per transaction (exactly-once) or per flush (at-least-once). A transaction
    costs a few round trips to Kafka however many rows it carries: a backlog drains at
    ~121k events/s with 20,000, ~90k with 5,000 (bench.forwarder_bench, exactly-once).
    A trickle never waits for it (see ``linger``)."""
    linger: Duration = Field(0.5, ge=0, le=10)
    """After a round that was not full, wait this long for more rows before the next one:
    a Kafka transaction costs round trips and CPU however few rows it carries, so a
    trickle is shipped twice a second instead of once per spool commit (at 100
    readings/s 0.5 s instead of 0.1 s took the uplink thread and librdkafka from ~0.09 to
    ~0.03 CPU-s per 1,000 readings, bench/home_rates.py). A backlog (full rounds) drains
    without waiting. 0: ship every commit at once."""
    transactional_id_prefix: str = "edgegw-"
    heartbeat_interval: Duration = 60.0
    backoff_initial: Duration = 0.5
    backoff_max: Duration = 30.0
    send_timeout: Duration = 30.0
    """How long one transaction (or flush) may wait for the brokers before it is retried."""
    producer_overrides: dict[str, str | int | float | bool] = {}
    """Extra librdkafka producer properties (tuning only; security and transactions are ours)."""

    @model_validator(mode="after")
    def _overrides(self) -> KafkaConfig:
        for key in self.producer_overrides:
            if key.startswith(_FORBIDDEN_OVERRIDES):
                raise ValueError(f"producer_overrides may not set {key}: use security/mode instead")
        return self


class BridgeConfig(_Model):
    spool: SpoolConfig = SpoolConfig()
    kafka: KafkaConfig | None = None
    """No uplink when omitted: the spool keeps everything (up to its cap and TTL)."""


class KafkaSecrets(BaseModel):
    """The resolved secrets of :class:`KafkaSecurity` (the runtime resolves the refs)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sasl_password: SecretStr | None = None
    ssl_key_password: SecretStr | None = None
