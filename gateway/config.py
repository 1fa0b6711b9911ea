"""The one gateway config file: models, loading, and the checks a start would make.

``/etc/edgegw/edgegw.yaml`` when installed (``--config`` chooses another)::

    # yaml-language-server: $schema=../schemas/config.schema.json
    gateway:
      id: hall-pi                  # optional: derived once and kept in the state directory
      group: [ground-floor]        # optional: deployment groups (docs/fleet.md)
      state_dir: /var/lib/edgegw   # default: $STATE_DIRECTORY (systemd), else ./state
    location: {timezone: Europe/Berlin, latitude: 52.52, longitude: 13.40}
    mqtt: {host: 127.0.0.1, port: 1883}
    devices: [...]                 # devices.config.DeviceConfig
    actuators: [...]               # devices.config.ActuatorConfig
    rules: [...]                   # inline rules (docs/rules.md)
    include: [rules/home.yaml]     # rules files, relative to this file
    bridge: {...}                  # bridge.config.BridgeConfig (spool, Kafka)
    http: {host: 127.0.0.1, port: 9108}   # another address needs token: {file|env|credential: ...}
    homeassistant: {enabled: true}  # gateway.homeassistant.config.HomeAssistantSection
    log: {level: info}
    cloud: {...}                   # gateway.deploy.settings.CloudSection (deployments, commands)

Validation happens once, here; every problem is reported with ``file:line:column`` and
its key path. Secrets are never in the file: they are resolved from files, the
environment or ``$CREDENTIALS_DIRECTORY`` by :func:`resolve_secrets`.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bridge.config import BridgeConfig
from common.configtypes import SecretRef
from common.httpaccess import is_loopback
from devices.actuators import command_problem
from devices.config import ActuatorConfig, DeviceConfig, MqttConnection
from gateway.deploy.settings import CloudSection
from gateway.errors import ConfigError, ConfigIssue
from gateway.homeassistant.config import HomeAssistantSection
from rules.schema import Location

if TYPE_CHECKING:
    from gateway.rulesload import Declared
    from gateway.yamlio import KeyPath, YamlDocument

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "ConfigReview",
    "GatewayConfig",
    "GatewaySection",
    "HttpSection",
    "LoadedConfig",
    "LogSection",
    "config_json_schema",
    "load_config",
    "review_config",
    "review_document",
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
    group: list[str] = Field(default_factory=list)
    """Deployment groups (one name or a list): documents under ``group/<name>`` apply too."""

    @field_validator("id")
    @classmethod
    def _id(cls, value: str | None) -> str | None:
        if value is not None and not _ID.match(value):
            raise ValueError("gateway id: letters, digits, '.', '_' and '-', at most 63 characters")
        return value

    @field_validator("group", mode="before")
    @classmethod
    def _one_or_more(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @field_validator("group")
    @classmethod
    def _group_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not _ID.match(name):
                raise ValueError(f"group {name!r}: letters, digits, '.', '_' and '-', at most 63 characters")
        if len(set(value)) != len(value):
            raise ValueError("a group is named twice")
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
    token: SecretRef | None = None
    """Asked on every request but /healthz (docs/operations.md, "The status page");
    required when ``host`` is not a loopback address."""

    @model_validator(mode="after")
    def _token_off_loopback(self) -> HttpSection:
        if self.enabled and self.token is None and not is_loopback(self.host):
            raise ValueError(
                f"http.host {self.host!r} is not a loopback address: the status page and /metrics "
                "would be open to the network; set http.token to a secret reference "
                "({file: ...}, {env: ...} or {credential: ...}), or reach the gateway through "
                "an SSH tunnel (docs/operations.md)"
            )
        return self


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
    homeassistant: HomeAssistantSection = Field(default_factory=HomeAssistantSection)
    log: LogSection = Field(default_factory=LogSection)
    cloud: CloudSection | None = None
    """Deployments and commands from Kafka (docs/fleet.md); needs ``bridge.kafka``."""

    @model_validator(mode="after")
    def _cloud_needs_kafka(self) -> GatewayConfig:
        if self.cloud is not None and self.cloud.enabled and self.bridge.kafka is None:
            raise ValueError("cloud: needs bridge.kafka (deployments use its connection and security)")
        return self

    @model_validator(mode="after")
    def _ha_actuators(self) -> GatewayConfig:
        declared = {a.id for a in self.actuators}
        unknown = sorted(set(self.homeassistant.actuators) - declared)
        if unknown:
            raise ValueError(f"homeassistant.actuators names undeclared actuators: {', '.join(unknown)}")
        return self

    @model_validator(mode="after")
    def _unique_ids(self) -> GatewayConfig:
        for kind, items in (("device", self.devices), ("actuator", self.actuators)):
            seen: set[str] = set()
            for item in items:
                if item.id in seen:
                    raise ValueError(_duplicate(kind, item.id))
                seen.add(item.id)
        return self


def _duplicate(kind: str, item_id: str) -> str:
    return f"duplicate {kind} id {item_id!r}"


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    """A validated config plus its compiled, checked rules."""

    path: Path
    config: GatewayConfig
    rules: Any  # rules.compiler.RuleSet
    rule_files: tuple[Path, ...]


@dataclass(slots=True)
class ConfigReview:
    """Every problem of a config file and its rules files, found in one pass, and what
    validated: ``config`` when the file did, ``loaded`` when its rules did too."""

    doc: YamlDocument
    config: GatewayConfig | None
    loaded: LoadedConfig | None
    issues: list[ConfigIssue]


# Stands in for a location that is itself invalid (its own error is reported), so that
# sunrise/sunset guards are not reported again for want of a latitude and longitude.
_SOMEWHERE = Location(latitude=0.0, longitude=0.0)


def declared_sensors(devices: Iterable[DeviceConfig]) -> dict[str, frozenset[str] | None]:
    """Device ids and, where the profile names them, their metrics (None: any metric)."""
    out: dict[str, frozenset[str] | None] = {}
    for device in devices:
        metrics: set[str] | None = None
        if device.profile == "json" and device.fields:
            metrics = {spec.metric for spec in device.fields.values()}
        elif device.profile == "plain" and device.metric:
            metrics = {device.metric}
        out[device.id] = frozenset(metrics) if metrics is not None else None
    return out


def load_config(path: str | Path) -> LoadedConfig:
    """Load, validate and check a config file: every problem in one :class:`ConfigError`."""
    from gateway.yamlio import sorted_issues  # noqa: PLC0415

    review = review_config(path)
    if review.loaded is None:
        raise ConfigError(sorted_issues(review.issues))
    return review.loaded


def load_config_at_start(path: str | Path) -> LoadedConfig:
    """:func:`load_config` for a process that starts (``edgegw run``): the YAML is parsed in a
    forked child, so the parse's garbage never fragments this process's heap.

    ruamel's round trip (nodes, marks, comments) and the positions peak at ~70x the file:
    16 MiB for a 230 kB config of 1,000 devices, of which ~2 MiB survive. Freed, the rest
    stays resident (the survivors pin pymalloc's arenas and malloc's heap; ``malloc_trim``
    gives back ~1 MiB), which was ~11 MiB of an idle gateway. The child runs the whole
    review, so a bad file is reported exactly as :func:`load_config` reports it (line,
    column, key path); a good one comes back as plain data (pickled through a pipe) and is
    validated again here, which allocates little beyond the models it keeps. This process
    then never imports ruamel.yaml (unless ``include:`` files are parsed here, or a
    SIGHUP reload parses in-process).

    In-process (:func:`load_config`) whenever forking is not safe or not possible: more
    than one thread, no ``os.fork``, or anything unexpected in the child.
    """
    import pickle  # noqa: PLC0415
    import threading  # noqa: PLC0415

    from gateway.yamlio import YamlDocument, sorted_issues  # noqa: PLC0415

    if not hasattr(os, "fork") or threading.active_count() > 1:
        return load_config(path)
    path = Path(path)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child (coverage does not follow forks here)
        code = 1
        try:
            os.close(read_fd)
            try:
                review = review_config(path)
                payload: tuple[str, Any] = (
                    ("issues", sorted_issues(review.issues)) if review.loaded is None
                    else ("ok", review.doc.data)
                )  # fmt: skip
            except ConfigError as exc:
                payload = ("issues", exc.issues)
            blob = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
            with os.fdopen(write_fd, "wb") as out:
                out.write(blob)
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        blob = pipe.read()
    _, status = os.waitpid(pid, 0)
    kind: str
    value: Any
    try:
        # our own child's bytes, through a pipe only the two processes hold
        kind, value = pickle.loads(blob) if status == 0 else ("failed", None)  # noqa: S301
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError):
        kind, value = "failed", None
    del blob
    if kind == "issues":
        raise ConfigError(list[ConfigIssue](value))
    if kind != "ok":
        return load_config(path)  # the child failed: the same work here, its error raised here
    review = review_document(YamlDocument(data=value, file=str(path)), path)
    del value
    if review.loaded is None:  # changed since the child read it: report with positions
        return load_config(path)
    return review.loaded


def review_config(path: str | Path) -> ConfigReview:
    """Validate a config file and its rules in one pass.

    Only a file that cannot be read or parsed raises (:class:`ConfigError`): then nothing
    else can be checked. Otherwise the sections, the inline and included rules are all
    validated, and rules are checked against the devices and actuators that did validate;
    a device or actuator that failed (its own error is reported) still counts as declared,
    so the rules that name it are not reported again.
    """
    from gateway.yamlio import load_yaml  # noqa: PLC0415

    path = Path(path)
    return review_document(load_yaml(path), path)


def review_document(doc: YamlDocument, path: Path) -> ConfigReview:
    """:func:`review_config` of an already parsed document (``path``: where ``include:``
    entries are relative to; a deployment overlays a document on the local file's data)."""
    from gateway.rulesload import load_rules, load_rules_files  # noqa: PLC0415
    from gateway.yamlio import validate  # noqa: PLC0415
    from rules.compiler import RuleSet  # noqa: PLC0415

    issues: list[ConfigIssue] = []
    config: GatewayConfig | None = None
    try:
        config = validate(doc, GatewayConfig)
    except ConfigError as exc:
        issues += exc.issues
    if not isinstance(doc.data, dict):
        return ConfigReview(doc, None, None, issues)
    duplicates = _duplicate_ids(doc)
    if duplicates:  # the model can only say "somewhere": say where, at each repeat
        known = {d.message for d in duplicates}
        issues = [i for i in issues if i.path or i.message not in known] + duplicates
    inline = isinstance(doc.data.get("rules"), list)
    if inline:  # validated below as rules, with the rule schema's messages
        issues = [i for i in issues if not i.path.startswith("rules[")]
    declared = _declared(doc, config)
    rules: list[Any] = []
    seen: set[str] = set()
    if inline:
        part = load_rules([(doc, ("rules",))], declared=declared, seen=seen)
        issues += part.issues
        rules += part.rules
    files = _rule_files(doc, config, path, issues)
    if files:
        part = load_rules_files(files, declared, seen=seen)
        issues += part.issues
        rules += part.rules
    if issues or config is None:
        return ConfigReview(doc, config, None, issues)
    ruleset = RuleSet(tuple(rules), config.location)
    loaded = LoadedConfig(path=path, config=config, rules=ruleset, rule_files=tuple(files))
    return ConfigReview(doc, config, loaded, issues)


def _declared(doc: YamlDocument, config: GatewayConfig | None) -> Declared:
    """What rules may name: from the config, or from the parts of it that validated."""
    from gateway.rulesload import Declared  # noqa: PLC0415

    if config is not None:
        ids = frozenset(a.id for a in config.actuators)
        checks = command_problem(config.actuators)
        return Declared(declared_sensors(config.devices), ids, config.location, checks)
    devices = _items(doc, "devices", DeviceConfig)
    sensors: dict[str, frozenset[str] | None] | None = None
    if devices is not None:
        sensors = {raw_id: None for raw_id, model in devices if model is None and raw_id}
        sensors.update(declared_sensors(m for _, m in devices if isinstance(m, DeviceConfig)))
    actuators = _items(doc, "actuators", ActuatorConfig)
    actuator_ids = None if actuators is None else frozenset(raw_id for raw_id, _ in actuators if raw_id)
    valid = [m for _, m in actuators or [] if isinstance(m, ActuatorConfig)]
    location = Location()
    if "location" in doc.data:
        location = _valid(doc, ("location",), Location) or _SOMEWHERE
    return Declared(sensors, actuator_ids, location, command_problem(valid))


def _duplicate_ids(doc: YamlDocument) -> list[ConfigIssue]:
    issues = []
    for kind, key in (("device", "devices"), ("actuator", "actuators")):
        raw = doc.data.get(key)
        seen: set[str] = set()
        for index, item in enumerate(raw if isinstance(raw, list) else []):
            item_id = item.get("id") if isinstance(item, dict) else None
            if isinstance(item_id, str) and item_id in seen:
                issues.append(doc.issue((key, index, "id"), _duplicate(kind, item_id)))
            elif isinstance(item_id, str):
                seen.add(item_id)
    return issues


def _items(doc: YamlDocument, key: str, model: type[BaseModel]) -> list[tuple[str, Any]] | None:
    """Each item of a list section: its id as written and its model (None: invalid).
    None when the section is not a list."""
    raw = doc.data.get(key, [])
    if not isinstance(raw, list):
        return None
    out: list[tuple[str, Any]] = []
    for index, item in enumerate(raw):
        raw_id = item.get("id") if isinstance(item, dict) else None
        out.append((raw_id if isinstance(raw_id, str) else "", _valid(doc, (key, index), model)))
    return out


def _valid(doc: YamlDocument, path: KeyPath, model: Any) -> Any:
    """The data at ``path`` validated by ``model``, or None if it is not there or invalid
    (the validation of the whole file reports why)."""
    from gateway.yamlio import validate  # noqa: PLC0415

    try:
        doc.sub(path)
    except (KeyError, IndexError, TypeError):
        return None
    try:
        return validate(doc, model, path=path)
    except ConfigError:
        return None


def _rule_files(
    doc: YamlDocument, config: GatewayConfig | None, path: Path, issues: list[ConfigIssue]
) -> list[Path]:
    """The ``include:`` files that exist; an issue at the entry of each that does not."""
    raw = doc.data.get("include", [])
    if config is not None:
        entries = list(enumerate(config.include))
    elif isinstance(raw, list):
        entries = [(i, Path(p)) for i, p in enumerate(raw) if isinstance(p, str) and p]
    else:
        entries = []
    files = []
    for index, entry in entries:
        file = entry if entry.is_absolute() else path.parent / entry
        if not file.is_file():
            reason = "is not a file" if file.exists() else "does not exist"
            issues.append(doc.issue(("include", index), f"rules file {file} {reason}"))
            continue
        files.append(file)
    return files


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
