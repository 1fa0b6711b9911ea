"""A gateway whose SASL user may read only its own topics still takes deployments and
commands: Kafka with the StandardAuthorizer (KRaft), a SCRAM user per gateway, and the
ACLs docs/fleet.md lists ("Locking it down"); the same user cannot read anything else."""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError

# confluent-kafka's bundled stubs leave the ACL types out of confluent_kafka.admin's exports
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AclBinding,
    AclOperation,
    AclPermissionType,
    ResourcePatternType,
    ResourceType,
)

from simulators.testbed import KafkaNode, Mosquitto, java_problem
from tests.gateway.conftest import Gateway, TopicWatch, read_kafka, write_config
from tests.gateway.deploy.conftest import (
    GARAGE,
    GARAGE_SET,
    HEATING,
    THERMOSTAT,
    Cloud,
    cloud_config,
    version_of,
)

pytestmark = [pytest.mark.kafka, pytest.mark.mqtt, pytest.mark.slow]

GATEWAY = "acl-pi"
PASSWORD = "pw-" + secrets.token_urlsafe(12)
MakeGateway = Callable[[Path, int], Gateway]
MakeWatch = Callable[[list[str]], TopicWatch]


@pytest.fixture(scope="module")
def acl_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaNode]:
    problem = java_problem()
    if problem is not None:
        pytest.skip(problem)
    node = KafkaNode(
        tmp_path_factory.mktemp("kafka-acl") / "kafka",
        extra_listeners={"SASL_PLAINTEXT": "SASL_PLAINTEXT"},
        extra_properties={
            "sasl.enabled.mechanisms": "SCRAM-SHA-512",
            "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config":
                "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            # the plaintext listener (the test's admin, the brokers, the controller) is the super user
            "super.users": "User:ANONYMOUS",
        },
        scram_users={GATEWAY: PASSWORD},
    )  # fmt: skip
    node.start()
    yield node
    node.stop()


def _acl(kind: ResourceType, name: str, op: AclOperation) -> AclBinding:
    return AclBinding(
        kind, name, ResourcePatternType.LITERAL, f"User:{GATEWAY}", "*", op, AclPermissionType.ALLOW
    )


def _grant(node: KafkaNode, cloud: Cloud) -> None:
    """docs/fleet.md's list: read its two inbound topics, write its outbound ones, its transactional id."""
    t = cloud.topics
    acls = [_acl(ResourceType.TOPIC, name, op) for name in (cloud.desired, cloud.commands)
            for op in (AclOperation.READ, AclOperation.DESCRIBE)]  # fmt: skip
    acls += [_acl(ResourceType.TOPIC, name, op) for name in (t.readings, t.events, t.commands, t.heartbeats)
             for op in (AclOperation.WRITE, AclOperation.DESCRIBE)]  # fmt: skip
    acls += [_acl(ResourceType.TOPIC, t.checkpoints, op)
             for op in (AclOperation.READ, AclOperation.WRITE, AclOperation.DESCRIBE)]  # fmt: skip
    acls += [_acl(ResourceType.TRANSACTIONAL_ID, f"edgegw-{GATEWAY}", op)
             for op in (AclOperation.WRITE, AclOperation.DESCRIBE)]  # fmt: skip
    admin = node.admin()
    for future in admin.create_acls(acls).values():
        future.result(timeout=30)


def _reads(node: KafkaNode, topic: str) -> KafkaError | None:
    """What the gateway's user is told about ``topic``: its metadata error, if any."""
    consumer = Consumer({"bootstrap.servers": f"{node.host}:{node.listener_port('SASL_PLAINTEXT')}",
                         "security.protocol": "sasl_plaintext", "sasl.mechanism": "SCRAM-SHA-512",
                         "sasl.username": GATEWAY, "sasl.password": PASSWORD,
                         "group.id": f"probe-{uuid.uuid4().hex[:6]}"})  # fmt: skip
    try:
        meta = consumer.list_topics(topic, timeout=15).topics[topic]
        error: KafkaError | None = meta.error
        return error
    finally:
        consumer.close()


def test_a_gateway_that_may_read_only_its_own_topics_takes_deployments_and_commands(
    acl_kafka: KafkaNode, broker: Mosquitto, tmp_path: Path, http_port: int, gateways: MakeGateway,
    watch: MakeWatch, topic_prefix: str, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    from tests.gateway.conftest import kafka_topics  # noqa: PLC0415

    topics = kafka_topics(acl_kafka, topic_prefix)
    acl_kafka.create_topic(topics.checkpoints, config={"cleanup.policy": "compact"})
    desired = acl_kafka.create_topic(f"{topic_prefix}.desired", config={"cleanup.policy": "compact"})
    cloud = Cloud(acl_kafka, topics, desired, acl_kafka.create_topic(f"{topic_prefix}.commands-in"))
    other = acl_kafka.create_topic(f"{topic_prefix}.other")
    _grant(acl_kafka, cloud)

    config_path, config = cloud_config(tmp_path, broker, cloud, http_port=http_port, rules=[HEATING])
    config["gateway"]["id"] = GATEWAY
    config["bridge"]["kafka"]["bootstrap"] = f"{acl_kafka.host}:{acl_kafka.listener_port('SASL_PLAINTEXT')}"
    config["bridge"]["kafka"]["security"] = {
        "protocol": "SASL_PLAINTEXT",
        "sasl": {
            "mechanism": "SCRAM-SHA-512",
            "username": GATEWAY,
            "password": {"env": "EDGEGW_KAFKA_PASSWORD"},
        },
    }
    write_config(config_path, config)
    monkeypatch.setenv("EDGEGW_KAFKA_PASSWORD", PASSWORD)
    commands = watch([GARAGE_SET, THERMOSTAT])
    gateway = gateways(config_path, http_port).start()

    cloud.deploy(GATEWAY, 2, rules=[HEATING, GARAGE])
    cloud.deploy("someone-else", 3, rules=[])  # not its key: never acted on
    applied = cloud.events("edgegw.deployment.applied.v1", lambda es: any(version_of(e) == 2 for e in es))
    assert [(version_of(e), e.value["source"]) for e in applied] == [(2, GATEWAY)]
    command_id = cloud.command(GATEWAY, "garage/light", {"state": "on"})
    assert commands.wait_for(GARAGE_SET)[0].json() == {"state": "on"}
    results = cloud.events("edgegw.command.result.v1", bool)
    assert results[0].value["command_id"] == command_id

    # the same user sees nothing else (its outbound topics it may only describe and write)
    assert _reads(acl_kafka, cloud.desired) is None
    error = _reads(acl_kafka, other)
    assert error is not None
    assert error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, error
    log = json.dumps(gateway.logs)
    assert PASSWORD not in log
    assert read_kafka(acl_kafka.bootstrap, [topics.heartbeats], until=bool)
    assert gateway.terminate()[0] == 0
