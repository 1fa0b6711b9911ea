"""Kafka over SASL_SSL (SCRAM-SHA-512, PLAIN) and mutual TLS; wrong credentials; no secret in any log."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs

from bridge.config import (
    KafkaConfig,
    KafkaSecrets,
    KafkaSecurity,
    SaslConfig,
    SecretRef,
    SpoolConfig,
    TlsConfig,
)
from bridge.forwarder import Forwarder
from bridge.policy import lane_priorities
from bridge.spool import Spool
from bridge.uplink import UplinkProcess
from simulators.testbed import KafkaNode, TlsFiles, java_problem, make_tls_files
from tests.bridge.conftest import make_topics, wait_until
from tests.bridge.helpers import read_topic, readings

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

USER = "edgegw"
PASSWORD = "s3cr3t-" + secrets.token_urlsafe(12)


def _pem_keystore(tls: TlsFiles, directory: Path) -> Path:
    """Kafka's PEM keystore: the private key and the certificate chain in one file."""
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415 - trustme's dependency

    key = serialization.load_pem_private_key(tls.server_key.read_bytes(), password=None)
    pkcs8 = key.private_bytes(  # Kafka reads PKCS#8 only
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path = directory / "server-keystore.pem"
    path.write_bytes(pkcs8 + tls.server_cert.read_bytes())
    return path


@pytest.fixture(scope="module")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[KafkaNode, TlsFiles]]:
    problem = java_problem()
    if problem is not None:
        pytest.skip(problem)
    work = tmp_path_factory.mktemp("kafka-secure")
    tls = make_tls_files(work / "tls")
    keystore = _pem_keystore(tls, work / "tls")
    node = KafkaNode(
        work / "kafka",
        extra_listeners={"SASL_SSL": "SASL_SSL", "MTLS": "SSL"},
        extra_properties={
            "sasl.enabled.mechanisms": "SCRAM-SHA-512,PLAIN",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config":
                "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            "listener.name.sasl_ssl.plain.sasl.jaas.config":
                "org.apache.kafka.common.security.plain.PlainLoginModule required "
                f'user_{USER}="{PASSWORD}";',
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(keystore),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(tls.ca_cert),
            "listener.name.mtls.ssl.client.auth": "required",
        },
        scram_users={USER: PASSWORD},
    )  # fmt: skip
    node.start()
    yield node, tls
    node.stop()


def _endpoint(node: KafkaNode, listener: str) -> str:
    return f"{node.host}:{node.listener_port(listener)}"


Factory = Callable[..., tuple[Spool, Forwarder]]


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "PLAIN"])
def test_sasl_ssl_ships_and_never_logs_the_password(
    secure_kafka: tuple[KafkaNode, TlsFiles], topic_prefix: str, bridge_factory: Factory, mechanism: str
) -> None:
    node, tls = secure_kafka
    topics = make_topics(node, topic_prefix)
    security = KafkaSecurity(
        protocol="SASL_SSL",
        sasl=SaslConfig(mechanism=mechanism, username=USER, password=SecretRef(env="EDGEGW_KAFKA_PASSWORD")),
        tls=TlsConfig(ca_file=tls.ca_cert),
    )
    with capture_logs() as logs:
        spool, forwarder = bridge_factory(
            _endpoint(node, "SASL_SSL"), topics, security=security,
            secrets=KafkaSecrets(sasl_password=SecretStr(PASSWORD)),
        )  # fmt: skip
        spool.append_many(readings(200))
        forwarder.start()
        wait_until(lambda: forwarder.stats().shipped == 200, 60, "records over SASL_SSL")
        stats = forwarder.stats()
    assert len(read_topic(node.bootstrap, topics.readings, 200)) == 200
    assert PASSWORD not in json.dumps(logs, default=str)
    assert PASSWORD not in repr(stats)
    assert PASSWORD not in repr(KafkaSecrets(sasl_password=SecretStr(PASSWORD)))


def test_wrong_password_is_a_clear_error_and_the_spool_keeps_everything(
    secure_kafka: tuple[KafkaNode, TlsFiles], topic_prefix: str, bridge_factory: Factory
) -> None:
    node, tls = secure_kafka
    topics = make_topics(node, topic_prefix)
    wrong = "not-" + PASSWORD
    security = KafkaSecurity(
        protocol="SASL_SSL",
        sasl=SaslConfig(username=USER, password=SecretRef(file=Path("/run/credentials/edgegw/kafka"))),
        tls=TlsConfig(ca_file=tls.ca_cert),
    )
    with capture_logs() as logs:
        spool, forwarder = bridge_factory(
            _endpoint(node, "SASL_SSL"),
            topics,
            security=security,
            secrets=KafkaSecrets(sasl_password=SecretStr(wrong)),
        )
        spool.append_many(readings(300))
        forwarder.start()
        wait_until(lambda: forwarder.stats().state == "refused", 60, "the uplink to be refused")
    stats = forwarder.stats()
    assert "refused" in (stats.last_error or "").lower()
    assert "authentication" in (stats.last_error or "").lower()
    assert stats.shipped == 0
    assert spool.stats().depth == 300, "the spool keeps every row"
    refused = [e for e in logs if e["event"] == "uplink refused"]
    assert refused
    assert refused[0]["log_level"] == "error"
    text = json.dumps(logs, default=str)
    assert wrong not in text
    assert PASSWORD not in text


def test_mutual_tls(
    secure_kafka: tuple[KafkaNode, TlsFiles], topic_prefix: str, bridge_factory: Factory
) -> None:
    node, tls = secure_kafka
    topics = make_topics(node, topic_prefix)
    security = KafkaSecurity(
        protocol="SSL", tls=TlsConfig(ca_file=tls.ca_cert, cert_file=tls.client_cert, key_file=tls.client_key)
    )
    spool, forwarder = bridge_factory(_endpoint(node, "MTLS"), topics, security=security)
    spool.append_many(readings(50))
    forwarder.start()
    wait_until(lambda: forwarder.stats().shipped == 50, 60, "records over mutual TLS")
    assert len(read_topic(node.bootstrap, topics.readings, 50)) == 50


def test_mutual_tls_without_a_client_certificate_is_refused(
    secure_kafka: tuple[KafkaNode, TlsFiles], topic_prefix: str, bridge_factory: Factory
) -> None:
    node, tls = secure_kafka
    topics = make_topics(node, topic_prefix)
    security = KafkaSecurity(protocol="SSL", tls=TlsConfig(ca_file=tls.ca_cert))
    spool, forwarder = bridge_factory(_endpoint(node, "MTLS"), topics, security=security, send_timeout=5.0)
    spool.append_many(readings(5))
    forwarder.start()
    wait_until(lambda: forwarder.stats().state in ("refused", "backoff"), 60, "the uplink to fail")
    assert forwarder.stats().shipped == 0
    assert spool.stats().depth == 5


def test_the_uplink_process_gets_the_password_over_its_socket_only(
    secure_kafka: tuple[KafkaNode, TlsFiles],
    topic_prefix: str,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``edgegw run``'s uplink process (bridge/uplink.py) ships over SASL_SSL with the
    password it was sent on its socket pair: not in its argv, its environment (the variable
    the config names is removed from it) or its logs."""
    node, tls = secure_kafka
    monkeypatch.setenv("EDGEGW_KAFKA_PW", PASSWORD)  # where the gateway resolved it from
    topics = make_topics(node, topic_prefix)
    security = KafkaSecurity(
        protocol="SASL_SSL",
        sasl=SaslConfig(mechanism="SCRAM-SHA-512", username=USER, password=SecretRef(env="EDGEGW_KAFKA_PW")),
        tls=TlsConfig(ca_file=tls.ca_cert),
    )
    kafka = KafkaConfig(bootstrap=_endpoint(node, "SASL_SSL"), topics=topics, security=security,
                        backoff_initial=0.2, backoff_max=2.0)  # fmt: skip
    spool = Spool.open(SpoolConfig(path=tmp_path / "spool.db"), lanes=lane_priorities(topics.of_kind()))
    uplink = UplinkProcess(spool, kafka, gateway_id="gw-uplink-sasl",
                           secrets=KafkaSecrets(sasl_password=SecretStr(PASSWORD)))  # fmt: skip
    try:
        spool.append_many(readings(200))
        uplink.start()
        wait_until(lambda: uplink.stats().shipped == 200, 60, "records over SASL_SSL from the uplink process")
        pid = uplink.process().pid
        assert pid is not None
        for what in ("cmdline", "environ"):
            assert PASSWORD.encode() not in Path(f"/proc/{pid}/{what}").read_bytes(), what
    finally:
        uplink.stop(2.0)
        depth = spool.stats().depth
        spool.close()
    assert depth == 0
    assert uplink.process().state == "stopped"
    assert len(read_topic(node.bootstrap, topics.readings, 200)) == 200
    out, err = capfd.readouterr()
    assert "uplink process started" in out + err
    assert PASSWORD not in out + err
