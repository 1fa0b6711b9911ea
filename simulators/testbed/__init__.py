"""The test bed: real brokers on loopback ports, shared by the tests, the demo and the benchmarks.

- :class:`Mosquitto`: the Debian ``mosquitto`` binary with a config written here
  (anonymous, or TLS with a password file), persistence on.
- :class:`KafkaNode` / :class:`KafkaCluster`: Apache Kafka in KRaft mode, run from jars that
  Maven fetched from Maven Central into a cache (``scripts/kafka/pom.xml``).
- :func:`kafka_from_env`: ``EDGEGW_TEST_KAFKA=host:port`` points at an existing cluster.
- :class:`PowerCutFS`: a FUSE pass-through file system that drops unsynced writes and
  directory changes on command, as a power cut does (:mod:`simulators.testbed.powercut`).
"""

from __future__ import annotations

from simulators.testbed._process import free_port
from simulators.testbed.certs import TlsFiles, make_tls_files
from simulators.testbed.kafka import (
    ExternalKafka,
    KafkaCluster,
    KafkaEndpoint,
    KafkaNode,
    ensure_kafka_jars,
    java_problem,
    kafka_from_env,
)
from simulators.testbed.mosquitto import Mosquitto, find_mosquitto
from simulators.testbed.powercut import FuseUnavailableError, PowerCutFS, PowerCutStats, fuse_problem

__all__ = [
    "ExternalKafka",
    "FuseUnavailableError",
    "KafkaCluster",
    "KafkaEndpoint",
    "KafkaNode",
    "Mosquitto",
    "PowerCutFS",
    "PowerCutStats",
    "TlsFiles",
    "ensure_kafka_jars",
    "find_mosquitto",
    "free_port",
    "fuse_problem",
    "java_problem",
    "kafka_from_env",
    "make_tls_files",
]
