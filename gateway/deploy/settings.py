"""The ``cloud:`` section of the gateway config: deployments and commands from Kafka.

::

    gateway:
      id: hall-pi
      group: [ground-floor, pis]   # or one name; documents under group/<name> apply here too
    cloud:
      desired_topic: edgegw.desired        # compacted; key = gateway id or group/<name>
      commands_topic: edgegw.commands.in   # key = gateway id or group/<name>
      settle: 30s                          # health watch after a deployment, then last-good
      max_document_bytes: 256KiB

The connection and its security (TLS, SASL) are the bridge's (``bridge.kafka``): one
set of credentials per gateway, documented in docs/fleet.md with the ACLs they need.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ByteSize, ConfigDict, Field, field_validator

from common.configtypes import Duration

__all__ = ["CloudSection"]

_KAFKA_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


class CloudSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    desired_topic: str = "edgegw.desired"
    """Compacted topic of desired-state documents (one full document per key)."""
    commands_topic: str = "edgegw.commands.in"
    """Commands for declared actuators, each with a ``command_id`` and an ``expires_at``."""
    settle: Duration = Field(30.0, ge=0, le=3600)
    """After applying a document: how long health is watched before it becomes last-good."""
    max_document_bytes: ByteSize = Field(ByteSize(256 * 1024), ge=64, le=16 * 1024 * 1024)
    """A larger document is rejected unread."""
    max_command_bytes: ByteSize = Field(ByteSize(16 * 1024), ge=64, le=1024 * 1024)
    """A larger command is refused unread."""
    remember_commands: int = Field(10_000, ge=100, le=1_000_000)
    """Command ids kept in the state directory (executed at most once)."""

    @field_validator("desired_topic", "commands_topic")
    @classmethod
    def _kafka_name(cls, value: str) -> str:
        if not _KAFKA_TOPIC.fullmatch(value):
            raise ValueError(f"invalid Kafka topic {value!r}: letters, digits, '.', '_' and '-' only")
        return value
