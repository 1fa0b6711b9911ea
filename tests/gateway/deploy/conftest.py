"""Helpers of the deployment end-to-end tests: a gateway config with a ``cloud:`` section
on this test's topics, documents and commands written to Kafka as the central side would,
and the outcome events read back."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bridge.central import produce
from bridge.config import TopicsConfig
from simulators.fleet import FleetSpec
from simulators.testbed import KafkaEndpoint, Mosquitto
from tests.gateway.conftest import DEMO_FLEET, KRecord, gateway_config, kafka_topics, read_kafka, write_config

HEATING: dict[str, Any] = {
    "id": "heating",
    "when": {"sensor": "temp-01/temperature", "below": 18, "for": "10s"},
    "then": [{"set": "living-room/thermostat", "to": {"state": "heat"}}],
}
GARAGE: dict[str, Any] = {
    "id": "garage-light",
    "when": {"sensor": "temp-03/temperature", "above": 25},
    "then": [{"set": "garage/light", "to": {"state": "on"}}],
}
ACTUATORS: list[dict[str, Any]] = [
    {"id": "living-room/thermostat", "profile": "zigbee2mqtt", "name": "living-room-thermostat"},
    {"id": "garage/light", "profile": "zigbee2mqtt", "name": "garage-light", "confirm": {"timeout": "5s"}},
]
THERMOSTAT, GARAGE_SET = "zigbee2mqtt/living-room-thermostat/set", "zigbee2mqtt/garage-light/set"


@dataclass(frozen=True)
class Cloud:
    kafka: KafkaEndpoint
    topics: TopicsConfig
    desired: str
    commands: str

    @property
    def conf(self) -> dict[str, Any]:
        return {"bootstrap.servers": self.kafka.bootstrap}

    def deploy(self, key: str, version: int, **sections: Any) -> None:
        """Write a document as ``edgegw deploy`` does (the version given)."""
        produce(self.conf, self.desired, key, json.dumps({"version": version, **sections}).encode())

    def deploy_text(self, key: str, text: str) -> None:
        produce(self.conf, self.desired, key, text.encode())

    def command(
        self,
        key: str,
        actuator: str,
        payload: dict[str, Any],
        *,
        command_id: str | None = None,
        expires_in: float = 300.0,
    ) -> str:
        command_id = command_id or f"c-{uuid.uuid4().hex[:8]}"
        body = {
            "command_id": command_id,
            "actuator": actuator,
            "payload": payload,
            "expires_at": time.time() + expires_in,
        }
        produce(self.conf, self.commands, key, json.dumps(body).encode())
        return command_id

    def events(
        self, ce_type: str, until: Any, *, timeout: float = 60.0, required: bool = True
    ) -> list[KRecord]:
        """The events of ``ce_type`` in the events topic, read until ``until(those)`` holds.

        ``required``: fail here, naming what was found, when it does not hold by ``timeout``
        (set it False to look for events that should not come)."""

        def of_type(records: list[KRecord]) -> list[KRecord]:
            return [r for r in records if r.headers.get("ce_type") == ce_type]

        records = read_kafka(
            self.kafka.bootstrap,
            [self.topics.events],
            until=lambda rs: until(of_type(rs)),
            timeout=timeout,
            settle=1.0,
            idle=timeout,
        )
        found = of_type(records)
        if required and not until(found):
            raise AssertionError(
                f"{ce_type}: the awaited event is not in {self.topics.events} within {timeout} s: {found}"
            )
        return found


@pytest.fixture
def cloud(kafka: KafkaEndpoint, topic_prefix: str) -> Cloud:
    topics = kafka_topics(kafka, topic_prefix)
    desired = kafka.create_topic(f"{topic_prefix}.desired", config={"cleanup.policy": "compact"})
    commands = kafka.create_topic(f"{topic_prefix}.commands-in")
    return Cloud(kafka, topics, desired, commands)


def cloud_config(
    tmp_path: Path,
    broker: Mosquitto,
    cloud: Cloud,
    *,
    http_port: int,
    rules: list[dict[str, Any]],
    group: list[str] | None = None,
    settle: str = "1s",
    name: str = "edgegw.yaml",
    gateway_id: str | None = None,
) -> tuple[Path, dict[str, Any]]:
    devices = [d for d in FleetSpec.load(DEMO_FLEET).gateway_devices() if d["id"] in ("temp-01", "temp-03")]
    config = gateway_config(
        tmp_path,
        (broker.host, broker.port),
        http_port=http_port,
        devices=devices,
        actuators=ACTUATORS,
        rules=rules,
        kafka=cloud.kafka,
        topics=cloud.topics,
    )
    if gateway_id is not None:
        config["gateway"]["id"] = gateway_id
        config["gateway"]["state_dir"] = str(tmp_path / f"state-{gateway_id}")
    if group:
        config["gateway"]["group"] = group
    config["bridge"]["kafka"]["heartbeat_interval"] = "1s"
    config["cloud"] = {"desired_topic": cloud.desired, "commands_topic": cloud.commands, "settle": settle}
    return write_config(tmp_path / name, config), config


def version_of(record: KRecord) -> int:
    return int(record.value["version"])
