"""``edgegw check``: everything a start would validate, without connecting to anything.

Errors (a :class:`ConfigError`, exit 2): the config and its rules, secrets that cannot
be read, a state directory that cannot be written. Warnings: things edgegw can see but
that only matter in some set-ups, such as Mosquitto limits on this machine that can lose
queued QoS 1 messages while the gateway restarts (docs/devices.md explains them).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from gateway.config import LoadedConfig, load_config
from gateway.errors import ConfigError, ConfigIssue
from gateway.secrets import SecretSource, resolve_secret

__all__ = ["CheckReport", "check_config", "mosquitto_warnings"]

MOSQUITTO_CONF = Path("/etc/mosquitto/mosquitto.conf")
_LOCAL = {"127.0.0.1", "localhost", "::1"}


@dataclass(slots=True)
class CheckReport:
    loaded: LoadedConfig
    warnings: list[str] = field(default_factory=list)
    summary: list[str] = field(default_factory=list)


def check_config(path: Path, *, mosquitto_conf: Path = MOSQUITTO_CONF) -> CheckReport:
    loaded = load_config(path)
    config = loaded.config
    issues: list[ConfigIssue] = []
    refs: list[tuple[str, SecretSource | None]] = [("mqtt password", config.mqtt.password)]
    kafka = config.bridge.kafka
    if kafka is not None and kafka.security.sasl is not None:
        refs.append(("kafka sasl password", kafka.security.sasl.password))
    for what, ref in refs:
        if ref is None:
            continue
        try:
            resolve_secret(ref, what=what)
        except ConfigError as exc:
            issues += exc.issues
    for what, file in _files(loaded):
        if file is not None and not file.exists():
            issues.append(ConfigIssue(f"{what}: {file} does not exist", file=str(path)))
    state_dir = config.gateway.resolved_state_dir()
    if not _writable(state_dir):
        issues.append(ConfigIssue(f"state directory {state_dir} is not writable", file=str(path)))
    if issues:
        raise ConfigError(issues)
    report = CheckReport(loaded)
    for device in config.devices:
        if (
            device.transport == "serial"
            and device.serial is not None
            and not Path(device.serial.port).exists()
        ):
            report.warnings.append(f"device {device.id}: serial port {device.serial.port} is not there now")
    if config.mqtt.host in _LOCAL and config.mqtt.port in (None, 1883, 8883):
        # the broker of this machine's mosquitto package: we can read its settings
        report.warnings += mosquitto_warnings(mosquitto_conf)
    report.summary = [
        f"{path}: valid",
        f"  devices: {len(config.devices)}, actuators: {len(config.actuators)}, rules: {len(loaded.rules)}",
        f"  state directory: {state_dir}",
        f"  kafka uplink: {kafka.bootstrap + ' (' + kafka.mode + ')' if kafka else 'none (spool only)'}",
    ]
    return report


def _files(loaded: LoadedConfig) -> list[tuple[str, Path | None]]:
    config = loaded.config
    out: list[tuple[str, Path | None]] = []
    tls = config.mqtt.tls
    if tls is not None:
        out += [("mqtt.tls.ca_file", tls.ca_file), ("mqtt.tls.cert_file", tls.cert_file),
                ("mqtt.tls.key_file", tls.key_file)]  # fmt: skip
    kafka = config.bridge.kafka
    if kafka is not None and kafka.security.tls is not None:
        ktls = kafka.security.tls
        out += [("bridge.kafka.security.tls.ca_file", ktls.ca_file),
                ("bridge.kafka.security.tls.cert_file", ktls.cert_file),
                ("bridge.kafka.security.tls.key_file", ktls.key_file)]  # fmt: skip
    return out


def _writable(directory: Path) -> bool:
    probe = directory
    while not probe.exists():
        if probe.parent == probe:
            return False
        probe = probe.parent
    return os.access(probe, os.W_OK | os.X_OK)


def mosquitto_warnings(conf: Path) -> list[str]:
    """Warnings about a local Mosquitto config (and its include_dir) that can lose messages."""
    settings: dict[str, str] = {}
    for file in _conf_files(conf):
        for raw in file.read_text(errors="replace").splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            key, _, value = line.partition(" ")
            settings[key] = value.strip()
    if not settings:
        return []
    warnings = []
    queued = int(settings.get("max_queued_messages", "100") or 100)
    if 0 < queued < 10_000:
        warnings.append(
            f"mosquitto max_queued_messages is {queued}: while edgegw is stopped the broker keeps at most "
            f"that many QoS 1 messages per device subscription and drops the rest; raise it (e.g. 1000000)"
        )
    if settings.get("persistence", "false").lower() != "true":
        warnings.append(
            "mosquitto persistence is off: queued QoS 1 messages are lost when the broker restarts"
        )
    inflight = int(settings.get("max_inflight_messages", "20") or 20)
    if 0 < inflight < 100:
        warnings.append(
            f"mosquitto max_inflight_messages is {inflight}: it caps ingest throughput because edgegw "
            "acks after the spool commit; 1000 is a good value"
        )
    return warnings


def _conf_files(conf: Path) -> list[Path]:
    if not conf.is_file():
        return []
    files = [conf]
    match = re.search(r"^\s*include_dir\s+(\S+)", conf.read_text(errors="replace"), re.MULTILINE)
    if match:
        directory = Path(match.group(1))
        if directory.is_dir():
            files += sorted(directory.glob("*.conf"))
    return files
