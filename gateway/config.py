"""The one gateway config file: models, loading, and the checks a start would make.

``/etc/edgegw/edgegw.yaml`` when installed (``--config`` chooses another)::

    # yaml-language-server: $schema=../schemas/config.schema.json
    gateway:
      id: hall-pi                  # optional: derived once and kept in the state directory
      state_dir: /var/lib/edgegw   # default: $STATE_DIRECTORY (systemd), else ./state
    location: {timezone: Europe/Berlin, latitude: 52.52, longitude: 13.40}
    mqtt: {host: 127.0.0.1, port: 1883}
    devices: [...]                 # devices.config.DeviceConfig
    actuators: [...]               # devices.config.ActuatorConfig
    rules: [...]                   # inline rules (docs/rules.md)
    include: [rules/home.yaml]     # rules files, relative to this file
    bridge: {...}                  # bridge.config.BridgeConfig (spool, Kafka)
    http: {host: 127.0.0.1, port: 9108}
    log: {level: info}

Validation happens once, here; every problem is reported with ``file:line:column`` and
its key path. Secrets are never in the file: they are resolved from files, the
environment or ``$CREDENTIALS_DIRECTORY`` by :func:`resolve_secrets`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bridge.config import BridgeConfig
from devices.config import ActuatorConfig, DeviceConfig, MqttConnection
from gateway.errors import ConfigError, ConfigIssue
from rules.schema import Location

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "GatewayConfig",
    "GatewaySection",
    "HttpSection",
    "LoadedConfig",
    "LogSection",
    "config_json_schema",
    "load_config",
]

DEFAULT_CONFIG_PATH = Path("/etc/edgegw/edgegw.yaml")
SCHEMA_ID = "https://edgegw.invalid/schemas/config.schema.json"
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GatewaySection(_Model):
    id: str | None = None
    """Unique in the fleet; keys the Kafka transactional id. Omit it to derive one once."""
    state_dir: Path | None = None
    """Spool and rule state. Default: ``$STATE_DIRECTORY`` (systemd), else ``./state``."""

    @field_validator("id")
    @classmethod
    def _id(cls, value: str | None) -> str | None:
        if value is not None and not _ID.match(value):
            raise ValueError("gateway id: letters, digits, '.', '_' and '-', at most 63 characters")
        return value

    def resolved_state_dir(self, environ: dict[str, str] | None = None) -> Path:
        env = os.environ if environ is None else environ
        if self.state_dir is not None:
            return self.state_dir
        # systemd's StateDirectory= may list several, separated by ':'
        from_systemd = env.get("STATE_DIRECTORY", "").split(":")[0]
        return Path(from_systemd) if from_systemd else Path("state")


class HttpSection(_Model):
    enabled: bool = True
    host: str = "127.0.0.1"
    """Loopback by default: /metrics and /healthz are for the local Prometheus or agent."""
    port: int = Field(default=9108, ge=0, le=65535)


class LogSection(_Model):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"
    """``auto``: JSON under systemd (``JOURNAL_STREAM``) or when not on a terminal."""


class GatewayConfig(_Model):
    """The whole config file."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="edgegw config")

    gateway: GatewaySection = Field(default_factory=GatewaySection)
    location: Location = Field(default_factory=Location)
    mqtt: MqttConnection = Field(default_factory=MqttConnection)
    devices: list[DeviceConfig] = Field(default_factory=list)
    actuators: list[ActuatorConfig] = Field(default_factory=list)
    rules: list[dict[str, Any]] = Field(default_factory=list)
    """Inline rules; validated against the rule schema by :func:`load_config`."""
    include: list[Path] = Field(default_factory=list)
    """Rules files (a mapping with a ``rules:`` list), relative to the config file."""
    bridge: BridgeConfig = Field(default_factory=BridgeConfig)
    http: HttpSection = Field(default_factory=HttpSection)
    log: LogSection = Field(default_factory=LogSection)

    @model_validator(mode="after")
    def _unique_ids(self) -> GatewayConfig:
        for kind, items in (("device", self.devices), ("actuator", self.actuators)):
            seen: set[str] = set()
            for item in items:
                if item.id in seen:
                    raise ValueError(f"duplicate {kind} id {item.id!r}")
                seen.add(item.id)
        return self


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    """A validated config plus its compiled, checked rules."""

    path: Path
    config: GatewayConfig
    rules: Any  # rules.compiler.RuleSet
    rule_files: tuple[Path, ...]


def declared_sensors(config: GatewayConfig) -> dict[str, frozenset[str] | None]:
    """Device ids and, where the profile names them, their metrics (None: any metric)."""
    out: dict[str, frozenset[str] | None] = {}
    for device in config.devices:
        metrics: set[str] | None = None
        if device.profile == "json" and device.fields:
            metrics = {spec.metric for spec in device.fields.values()}
        elif device.profile == "plain" and device.metric:
            metrics = {device.metric}
        out[device.id] = frozenset(metrics) if metrics is not None else None
    return out


def load_config(path: str | Path) -> LoadedConfig:
    """Load, validate and check a config file: every problem in one :class:`ConfigError`."""
    from gateway.rulesload import Declared, load_rules, load_rules_files  # noqa: PLC0415
    from gateway.yamlio import load_yaml, validate  # noqa: PLC0415
    from rules.compiler import RuleSet  # noqa: PLC0415

    path = Path(path)
    doc = load_yaml(path)
    config = validate(doc, GatewayConfig)
    declared = Declared(
        devices=declared_sensors(config),
        actuators=frozenset(a.id for a in config.actuators),
        location=config.location,
    )
    inline = load_rules([(doc, ("rules",))], declared=declared) if config.rules else None
    files = tuple((path.parent / p) if not p.is_absolute() else p for p in config.include)
    included = load_rules_files(list(files), declared) if files else None
    issues: list[ConfigIssue] = []
    rules: list[Any] = []
    for part in (inline, included):
        if part is not None:
            issues += part.issues
            rules += part.rules
    seen: set[str] = set()
    for rule in rules:
        if rule.id in seen:
            issues.append(
                ConfigIssue(f"duplicate rule id {rule.id!r} (inline and in an included file)", file=str(path))
            )
        seen.add(rule.id)
    if issues:
        raise ConfigError(issues)
    ruleset = RuleSet(tuple(rules), config.location)
    return LoadedConfig(path=path, config=config, rules=ruleset, rule_files=files)


def config_json_schema() -> dict[str, Any]:
    schema = GatewayConfig.model_json_schema(by_alias=True)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID, **schema}


def config_json_schema_text() -> str:
    """The committed form (``schemas/config.schema.json``): sorted keys, two-space indent."""
    import json  # noqa: PLC0415

    return json.dumps(config_json_schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":  # pragma: no cover - `python -m gateway.config > schemas/config.schema.json`
    import sys

    sys.stdout.write(config_json_schema_text())
