"""Building the gateway's parts from its config: the spool, where the pipeline resumes
from, the Kafka uplink process, the device components. No life cycle here (that is
:mod:`gateway.runtime`): each function builds and returns.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from pydantic import SecretStr

from bridge import KafkaSecrets, Spool, lane_priorities
from bridge.uplink import UplinkProcess, secret_env_names
from devices import (
    Actuators,
    BadInputCounter,
    BatchSink,
    HealthTracker,
    MqttCommandLink,
    MqttConnection,
    MqttSource,
    SerialLineWriter,
    SerialSource,
)
from gateway.config import GatewayConfig, LoadedConfig
from gateway.errors import GatewayError
from gateway.ledger import DeliveryLedger
from gateway.rulestate import RULE_STATE_FILE, read_rule_state, set_aside
from gateway.runmarker import fsync_directory
from gateway.secrets import resolve_secret
from rules import Now, RuleEngine
from rules.state import entries_of, from_entries

__all__ = [
    "DeviceParts",
    "ResumePoint",
    "build_devices",
    "kafka_secrets",
    "open_spool",
    "resume_point",
    "start_forwarder",
]

_log = structlog.get_logger("edgegw.runtime")


def open_spool(config: GatewayConfig, state_dir: Path) -> Spool:
    """The spool of ``config`` (in the state directory unless a path is configured)."""
    bridge = config.bridge
    spool_cfg = bridge.spool
    if "path" not in spool_cfg.model_fields_set:
        spool_cfg = spool_cfg.model_copy(update={"path": state_dir / "spool.db"})
    if "commit_batch_acks" not in spool_cfg.model_fields_set and config.mqtt.protocol == "5":
        # half the window the broker honours (Mosquitto 2 takes the client's receive maximum)
        acks = max(1, config.mqtt.receive_maximum // 2)
        spool_cfg = spool_cfg.model_copy(update={"commit_batch_acks": acks})
    spool_cfg.path.parent.mkdir(parents=True, exist_ok=True)
    lanes = lane_priorities(bridge.kafka.topics.of_kind()) if bridge.kafka is not None else None
    return Spool.open(spool_cfg, lanes=lanes)


@dataclass
class ResumePoint:
    """Where the pipeline starts on an open spool: the rules with the state it committed,
    and the MQTT messages it took (the redelivery check)."""

    engine: RuleEngine
    ledger: DeliveryLedger
    imported: dict[str, Any] = field(default_factory=dict)
    """Rule state read from an earlier version's rules-state.json, not in the spool yet."""
    legacy_file: Path | None = None

    def commit_import(self, spool: Spool) -> None:
        """Put the imported state into the spool, then rename the old file (kept)."""
        if not self.imported or self.legacy_file is None:
            return
        self.engine.mark_all_changed()
        spool.append_many([], state=self.imported)
        with contextlib.suppress(OSError):
            self.legacy_file.replace(self.legacy_file.with_suffix(".imported"))
            fsync_directory(self.legacy_file.parent)


def resume_point(loaded: LoadedConfig, spool: Spool, state_dir: Path, now: Now) -> ResumePoint:
    """The engine restored from the spool's rule state (or, once, from the rules-state.json
    of an earlier version) and the redelivery check from its packet ids."""
    engine = RuleEngine(loaded.rules, now)
    entries = spool.rule_state()
    legacy: Path | None = None
    if not entries:
        legacy = state_dir / RULE_STATE_FILE
        entries = _legacy_rule_state(legacy)
    data = from_entries(entries) if entries else None
    if data is not None:
        try:
            engine.restore(data, now)
        except (ValueError, KeyError, TypeError, GatewayError) as exc:
            _log.error("rule state unusable; the rules start fresh", error=str(exc))
            engine = RuleEngine(loaded.rules, now)
    ledger = DeliveryLedger(spool.marks(), capacity=max(1, loaded.config.bridge.spool.dedup_entries))
    if legacy is not None and data is not None:
        return ResumePoint(engine, ledger, entries, legacy)
    return ResumePoint(engine, ledger)


def _legacy_rule_state(path: Path) -> dict[str, Any]:
    """The rules-state.json of edgegw before the state moved into the spool, as spool rows."""
    data = read_rule_state(path)
    if data is None:
        return {}
    try:
        return entries_of(data)
    except (ValueError, KeyError, TypeError, GatewayError) as exc:
        set_aside(path, str(exc))
        return {}


def start_forwarder(config: GatewayConfig, spool: Spool, *, gateway_id: str, environ: dict[str, str],
                    busy: Callable[[], bool],
                    heartbeat_extra: Callable[[], Mapping[str, Any]] | None = None,
                    log_level: str | None = None,
                    ) -> UplinkProcess | None:  # fmt: skip
    """The Kafka uplink of ``config`` (a process of its own, see bridge/uplink.py), started;
    None without a ``bridge.kafka`` section."""
    kafka = config.bridge.kafka
    if kafka is None:
        _log.info("no kafka uplink configured: the spool keeps everything (up to its cap and TTL)")
        return None
    secrets = kafka_secrets(config, environ)
    fmt = config.log.format
    uplink = UplinkProcess(spool, kafka, gateway_id=gateway_id, secrets=secrets, busy=busy,
                           heartbeat_extra=heartbeat_extra, log_level=log_level or config.log.level,
                           log_json=None if fmt == "auto" else fmt == "json",
                           hidden_env=secret_env_names(config))  # fmt: skip
    uplink.start()
    return uplink


def kafka_secrets(config: GatewayConfig, environ: dict[str, str]) -> KafkaSecrets:
    """The resolved secrets of ``bridge.kafka.security`` (the forwarder's and the cloud consumer's)."""
    kafka = config.bridge.kafka
    assert kafka is not None
    security = kafka.security
    return KafkaSecrets(
        sasl_password=(
            resolve_secret(security.sasl.password, environ=environ, what="kafka sasl password")
            if security.sasl is not None
            else None
        ),
        ssl_key_password=(
            resolve_secret(security.tls.key_password, environ=environ, what="kafka key password")
            if security.tls is not None and security.tls.key_password is not None
            else None
        ),
    )


@dataclass
class DeviceParts:
    """The device components of one config: built together, stopped together."""

    health: HealthTracker
    actuators: Actuators
    serial_writers: dict[str, SerialLineWriter]
    mqtt_source: MqttSource | None
    command_link: MqttCommandLink | None
    serial_sources: list[SerialSource]


def mqtt_connection(config: GatewayConfig, gateway_id: str) -> MqttConnection:
    conn = config.mqtt
    if "client_id" not in conn.model_fields_set:
        # two gateways on one broker must not share a client id (they would kick each other off)
        conn = conn.model_copy(update={"client_id": f"edgegw-{gateway_id}"[:60]})
    return conn


def build_devices(config: GatewayConfig, *, gateway_id: str, environ: dict[str, str], sink: BatchSink,
                  counter: BadInputCounter, clock_synced: Callable[[], bool]) -> DeviceParts:  # fmt: skip
    conn = mqtt_connection(config, gateway_id)
    ref = config.mqtt.password
    password: SecretStr | None = resolve_secret(ref, environ=environ, what="mqtt password") if ref else None
    health = HealthTracker.for_devices(config.devices)
    serial_writers = {
        a.id: SerialLineWriter(a.serial.port, a.serial.baud)
        for a in config.actuators
        if a.transport == "serial" and a.serial is not None
    }
    actuators = Actuators(config.actuators, writers=serial_writers)
    mqtt_devices = [d for d in config.devices if d.transport == "mqtt"]
    mqtt_source = None
    if mqtt_devices:
        mqtt_source = MqttSource(conn, mqtt_devices, sink, password=password, counter=counter, health=health,
                                 clock_synced=clock_synced)  # fmt: skip
    command_link = (
        MqttCommandLink(conn, actuators, password=password)
        if any(a.transport == "mqtt" for a in config.actuators)
        else None
    )
    serial_devices = [d for d in config.devices if d.transport == "serial"]
    serial_sources = [SerialSource(d, sink, counter=counter, health=health) for d in serial_devices]
    return DeviceParts(health, actuators, serial_writers, mqtt_source, command_link, serial_sources)
