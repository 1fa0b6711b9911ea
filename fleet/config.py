"""The fleet view's config (``edgegw fleet serve --config fleet.yaml``): Kafka, store, web.

Kafka's security settings are the gateway's (``bridge.config.KafkaSecurity``: TLS, SASL
with the password in a file, an environment variable or a systemd credential), turned
into librdkafka settings by the gateway's own ``bridge.kafka.client_config``, and the
topics are the gateway's ``topics:`` section, so one block can be copied from a gateway
config. Every field has a default except ``kafka.bootstrap``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bridge.config import KafkaSecurity, TopicsConfig
from common.configtypes import Duration, SecretRef
from common.httpaccess import is_loopback
from gateway.errors import ConfigError, ConfigIssue

__all__ = ["FleetConfig", "FleetKafka", "consumer_settings", "from_values", "load_config"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FleetKafka(_Model):
    bootstrap: str = Field(min_length=1)
    security: KafkaSecurity = KafkaSecurity()
    topics: TopicsConfig = TopicsConfig()
    extra_topics: tuple[str, ...] = ()
    """More topics with edgegw CloudEvents (e.g. the cloud-to-edge outcome events)."""
    group_id: str = "edgegw-fleet"
    instance_id: str | None = None
    """Kafka static membership (``group.instance.id``): a restarted instance takes its
    partitions back at once instead of after the session timeout. Unique per instance."""
    session_timeout: Duration = Field(10.0, ge=6.0, le=300.0)
    consumer_overrides: dict[str, str | int | float | bool] = {}
    """Extra librdkafka consumer properties (tuning; offsets and isolation are ours)."""

    @field_validator("consumer_overrides")
    @classmethod
    def _ours(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in value:
            if key.startswith(("enable.auto.commit", "isolation.level", "group.id", "sasl.", "ssl.")):
                raise ValueError(f"consumer_overrides may not set {key}")
        return value

    def topic_names(self) -> list[str]:
        t = self.topics
        return list(dict.fromkeys([t.readings, t.events, t.commands, t.heartbeats, *self.extra_topics]))


class FleetConfig(_Model):
    kafka: FleetKafka
    store: str = "sqlite:///var/lib/edgegw-fleet/fleet.db"
    """``sqlite:///path/fleet.db`` (one instance) or ``postgresql://user@host/db`` (shared)."""
    listen: str = "127.0.0.1:8300"
    """``host:port`` of the web page and the JSON API; ``none`` for no web server."""
    token: SecretRef | None = None
    """Required when ``listen`` is not a loopback address: every request but ``/healthz``
    then needs it (``Authorization: Bearer``, or ``/?token=`` once in a browser)."""
    heartbeat_interval: Duration = 60.0
    """The gateways' ``bridge.kafka.heartbeat_interval``."""
    offline_after_heartbeats: int = Field(3, ge=1)
    """A gateway is offline after this many heartbeat intervals without one."""
    rollup_retention: Duration = 30 * 86400.0
    batch_size: int = Field(5000, ge=1, le=100_000)
    tick_interval: Duration = Field(1.0, gt=0, le=60)
    """How often silent gateways are checked for going offline."""
    schemas: Path | None = None
    """The folder of event schemas; the repository's ``schemas/events`` when omitted."""

    @model_validator(mode="after")
    def _open_to_the_network(self) -> FleetConfig:
        host = self.listen.rpartition(":")[0].strip("[]") or "127.0.0.1"
        if self.listen.lower() != "none" and self.token is None and not is_loopback(host):
            raise ValueError(f"listen {self.listen!r} is not a loopback address: the fleet view would be "
                             "open to the network; set token to a secret reference ({file: PATH}, "
                             "{env: VARIABLE} or {credential: NAME})")  # fmt: skip
        return self

    @property
    def offline_after(self) -> float:
        return self.heartbeat_interval * self.offline_after_heartbeats


def load_config(path: Path, **overrides: Any) -> FleetConfig:
    """The YAML file at ``path`` with ``overrides`` (dotted keys, e.g. ``kafka.bootstrap``)."""
    from ruamel.yaml import YAML  # noqa: PLC0415 - only where a file is given
    from ruamel.yaml.error import YAMLError  # noqa: PLC0415

    try:
        raw = YAML(typ="safe").load(path.read_text()) or {}
    except (OSError, YAMLError) as exc:
        raise ConfigError([ConfigIssue(f"cannot read: {exc}", file=str(path))]) from exc
    return _validate(raw, overrides, str(path))


def _validate(raw: dict[str, Any], overrides: dict[str, Any], where: str) -> FleetConfig:
    for dotted, value in overrides.items():
        if value is None:
            continue
        node = raw
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    try:
        return FleetConfig.model_validate(raw)
    except ValidationError as exc:
        issues = [ConfigIssue(e["msg"], file=where, path=".".join(map(str, e["loc"]))) for e in exc.errors()]
        raise ConfigError(issues) from exc


def from_values(**overrides: Any) -> FleetConfig:
    """A config from flags alone (no file)."""
    return _validate({}, overrides, "command line")


def consumer_settings(config: FleetConfig, *, group_id: str | None = None) -> dict[str, Any]:
    """librdkafka consumer properties: bootstrap, security and client logging exactly as the
    gateway's (``bridge.kafka.client_config``), offsets kept in the store, not in Kafka."""
    from bridge.config import KafkaConfig, KafkaSecrets  # noqa: PLC0415 - see the module docstring
    from bridge.kafka import client_config  # noqa: PLC0415
    from gateway.secrets import resolve_secret  # noqa: PLC0415

    k = config.kafka
    sec = k.security
    key_password = None if sec.tls is None else sec.tls.key_password
    secrets = KafkaSecrets(
        sasl_password=None if sec.sasl is None else resolve_secret(sec.sasl.password, what="SASL password"),
        ssl_key_password=None if key_password is None else resolve_secret(key_password, what="TLS key"),
    )
    conf = client_config(KafkaConfig(bootstrap=k.bootstrap, security=sec), secrets)
    conf.update({
        "group.id": group_id or k.group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "enable.partition.eof": True,
        "session.timeout.ms": int(k.session_timeout * 1000),
        "heartbeat.interval.ms": max(1000, int(k.session_timeout * 1000) // 5),
    })  # fmt: skip
    if k.instance_id and group_id is None:
        conf["group.instance.id"] = k.instance_id
    conf.update(k.consumer_overrides)
    return conf
