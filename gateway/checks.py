"""``edgegw check``: everything a start would validate, without connecting to anything.

Errors (a :class:`ConfigError`, exit 2), all found in one pass and each at its
``file:line:column``: the config and its rules, secrets that cannot be read, files that
are not there, a state directory that cannot be written. Warnings: things edgegw can see but
that only matter in some set-ups, such as Mosquitto limits on this machine that can lose
queued QoS 1 messages while the gateway restarts (docs/devices.md explains them).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter, ValidationError

from common.configtypes import SecretRef
from common.httpaccess import token_problem
from gateway.config import GatewaySection, LoadedConfig, review_config
from gateway.errors import ConfigError, ConfigIssue
from gateway.secrets import resolve_secret
from gateway.yamlio import sorted_issues

if TYPE_CHECKING:
    from gateway.yamlio import KeyPath, YamlDocument

__all__ = ["CheckReport", "check_config", "mosquitto_warnings"]

MOSQUITTO_CONF = Path("/etc/mosquitto/mosquitto.conf")
_LOCAL = {"127.0.0.1", "localhost", "::1"}


@dataclass(slots=True)
class CheckReport:
    loaded: LoadedConfig
    warnings: list[str] = field(default_factory=list)
    summary: list[str] = field(default_factory=list)


# where secrets and files are named in the config (whether or not their section validated)
_SECRETS: tuple[KeyPath, ...] = (
    ("mqtt", "password"),
    ("bridge", "kafka", "security", "sasl", "password"),
    ("bridge", "kafka", "security", "tls", "key_password"),
    ("http", "token"),
)
_FILES: tuple[KeyPath, ...] = tuple(
    (*section, key)
    for section in (("mqtt", "tls"), ("bridge", "kafka", "security", "tls"))
    for key in ("ca_file", "cert_file", "key_file")
)


def check_config(path: Path, *, mosquitto_conf: Path = MOSQUITTO_CONF) -> CheckReport:
    """Everything at once: the config, its rules, secrets, files and the state directory,
    each problem at its ``file:line:column``; :class:`ConfigError` with all of them."""
    review = review_config(path)
    doc = review.doc
    issues = list(review.issues)
    if isinstance(doc.data, dict):
        issues += _secret_issues(doc) + _file_issues(doc)
        issues += _state_dir_issues(doc)
    if issues or review.loaded is None:
        raise ConfigError(sorted_issues(issues))
    loaded = review.loaded
    config = loaded.config
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
    kafka = config.bridge.kafka
    report.summary = [
        f"{path}: valid",
        f"  devices: {len(config.devices)}, actuators: {len(config.actuators)}, rules: {len(loaded.rules)}",
        f"  state directory: {config.gateway.resolved_state_dir()}",
        f"  kafka uplink: {kafka.bootstrap + ' (' + kafka.mode + ')' if kafka else 'none (spool only)'}",
    ]
    if config.cloud is not None:
        from gateway.deploy.status import deployment_summary  # noqa: PLC0415
        from gateway.identity import GATEWAY_ID_FILE  # noqa: PLC0415

        state_dir = config.gateway.resolved_state_dir()
        stored = state_dir / GATEWAY_ID_FILE
        gateway_id = config.gateway.id or (stored.read_text().strip() if stored.is_file() else None)
        lines, warnings = deployment_summary(loaded, state_dir, gateway_id)
        report.summary += lines
        report.warnings += warnings
    return report


def _leaf(doc: YamlDocument, path: KeyPath, kind: Any) -> Any:
    """The value at ``path`` as ``kind``; None when it is absent or invalid (then the
    validation of its section reports it)."""
    try:
        value = doc.sub(path)
    except (KeyError, IndexError, TypeError):
        return None
    if value is None:
        return None
    try:
        return TypeAdapter(kind).validate_python(value)
    except ValidationError:
        return None


def _secret_issues(doc: YamlDocument) -> list[ConfigIssue]:
    issues = []
    for path in _SECRETS:
        ref = _leaf(doc, path, SecretRef)
        if ref is None:
            continue
        try:
            value = resolve_secret(ref, what="secret").get_secret_value()
        except ConfigError as exc:
            issues += [doc.issue(path, i.message.removeprefix("secret: ")) for i in exc.issues]
            continue
        if path == ("http", "token") and (problem := token_problem(value)) is not None:
            issues.append(doc.issue(path, problem))
    return issues


def _state_dir_issues(doc: YamlDocument) -> list[ConfigIssue]:
    path = ("gateway", "state_dir")
    written = _leaf(doc, path, Path)
    if written is None and isinstance(doc.data.get("gateway"), dict) and doc.data["gateway"].get("state_dir"):
        return []  # invalid: its own error says why
    state_dir = GatewaySection(state_dir=written).resolved_state_dir()
    if _writable(state_dir):
        return []
    return [doc.issue(path, f"state directory {state_dir} is not writable")]


def _file_issues(doc: YamlDocument) -> list[ConfigIssue]:
    issues = []
    for path in _FILES:
        file = _leaf(doc, path, Path)
        if file is not None and not file.exists():
            issues.append(doc.issue(path, f"{file} does not exist"))
    return issues


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
