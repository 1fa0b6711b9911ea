"""Apache Kafka in KRaft mode for tests, the demo and benchmarks.

The broker runs from the real Apache Kafka jars, which Maven fetches once from Maven
Central into a cache (``kafka-pom.xml`` beside this file, ``mvn dependency:copy-dependencies``).
Each node is ``java -cp '<cache>/*' kafka.Kafka server.properties`` on free loopback
ports, combined broker + controller, formatted with ``kafka.tools.StorageTool``.

- :class:`KafkaNode`: one node; replication factors of 1 so transactions work alone.
- :class:`KafkaCluster`: three nodes for failover tests (replication 3, min ISR 2).
- :class:`ExternalKafka`: ``EDGEGW_TEST_KAFKA=host:port`` uses an existing cluster.

Readiness means the broker answered a metadata request listing this node, not that a
port is open.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from confluent_kafka import KafkaException

# confluent-kafka's bundled stubs leave NewTopic out of confluent_kafka.admin's exports
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from gateway.errors import TestBedError
from simulators.testbed._process import free_port, stop_process, tail, wait_for

__all__ = [
    "ExternalKafka",
    "KafkaCluster",
    "KafkaEndpoint",
    "KafkaNode",
    "ensure_kafka_jars",
    "java_problem",
    "kafka_from_env",
]

HOST = "127.0.0.1"
POM = Path(__file__).with_name("kafka-pom.xml")
ENV_EXTERNAL = "EDGEGW_TEST_KAFKA"

# librdkafka logs every refused connection while a broker starts: keep that quiet.
_quiet = logging.getLogger("edgegw.testbed.librdkafka")
_quiet.addHandler(logging.NullHandler())
_quiet.propagate = False


def kafka_version() -> str:
    match = re.search(r"<kafka.version>([^<]+)</kafka.version>", POM.read_text())
    if match is None:  # pragma: no cover - the pom is ours
        raise TestBedError(f"no <kafka.version> in {POM}")
    return match.group(1)


def cache_root() -> Path:
    base = os.environ.get("EDGEGW_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "edgegw"
    )
    return Path(base)


def java_problem() -> str | None:
    """Why Kafka cannot run here (no Java 17+, no Maven without a jar cache), or None."""
    java = shutil.which("java")
    if java is None:
        return "Java 17 or newer is needed for the Kafka test broker (Debian: openjdk-17-jre-headless)"
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    match = re.search(r'version "(\d+)', out.stderr + out.stdout)
    if match is None or int(match.group(1)) < 17:
        return f"Java 17 or newer is needed for Kafka 4; found: {out.stderr.splitlines()[:1]}"
    if not _jar_marker().exists() and shutil.which("mvn") is None:
        return "Maven (Debian: maven) is needed once to fetch Kafka's jars from Maven Central"
    return None


def _jar_marker() -> Path:
    return cache_root() / f"kafka-{kafka_version()}" / ".complete"


def ensure_kafka_jars(*, quiet: bool = True) -> Path:
    """The folder holding Kafka's jars, fetched with Maven the first time (then cached)."""
    target = cache_root() / f"kafka-{kafka_version()}"
    marker = target / ".complete"
    if marker.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with (target.parent / ".kafka-fetch.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one fetch at a time (tests, demo, bench)
        if marker.exists():
            return target
        mvn = shutil.which("mvn")
        if mvn is None:
            raise TestBedError("Maven (mvn) is needed to fetch Kafka's jars from Maven Central")
        staging = target.with_name(target.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        cmd = [mvn, "-B", "-f", str(POM), "dependency:copy-dependencies", f"-DoutputDirectory={staging}"]
        if quiet:
            cmd.insert(2, "-q")
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise TestBedError(
                "Maven could not fetch Kafka's jars from Maven Central:\n"
                + (result.stdout + result.stderr)[-3000:]
            )
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
        marker.write_text(kafka_version() + "\n")
    return target


def _admin(bootstrap: str, **extra: Any) -> AdminClient:
    conf: dict[str, Any] = {"bootstrap.servers": bootstrap, "logger": _quiet}
    conf.update(extra)
    return AdminClient(conf)


class KafkaEndpoint(Protocol):
    """What tests need of any Kafka: where it is, and topics of their own."""

    @property
    def bootstrap(self) -> str: ...

    def create_topic(
        self, name: str, *, partitions: int = 1, config: Mapping[str, str] | None = None
    ) -> str: ...


class _TopicsMixin:
    bootstrap: str
    replication_factor: int = 1

    def admin(self, **extra: Any) -> AdminClient:
        return _admin(self.bootstrap, **extra)

    def create_topic(self, name: str, *, partitions: int = 1, config: Mapping[str, str] | None = None) -> str:
        """Create a topic and wait until it exists; returns its name."""
        admin = self.admin()  # keep the handle alive until the future resolves
        futures = admin.create_topics(
            [
                NewTopic(
                    name,
                    num_partitions=partitions,
                    replication_factor=self.replication_factor,
                    config=dict(config or {}),
                )
            ]
        )
        try:
            futures[name].result(timeout=30)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise TestBedError(f"cannot create topic {name}: {exc}") from exc
        return name


@dataclass
class ExternalKafka(_TopicsMixin):
    """A cluster someone else runs (``EDGEGW_TEST_KAFKA=host:port``): no start/stop/kill."""

    bootstrap: str
    replication_factor: int = 1


def kafka_from_env() -> ExternalKafka | None:
    value = os.environ.get(ENV_EXTERNAL, "").strip()
    return ExternalKafka(value) if value else None


class KafkaNode(_TopicsMixin):
    """One KRaft node (broker + controller) on free loopback ports, data in ``workdir``.

    ``extra_listeners`` maps a listener name to its security protocol (e.g.
    ``{"SASL_SSL": "SASL_SSL"}``); each gets a free port, see :meth:`listener_port`.
    ``extra_properties`` are added to ``server.properties`` verbatim; ``scram_users``
    are written into the metadata log at format time (``--add-scram``).
    """

    def __init__(
        self,
        workdir: Path,
        *,
        node_id: int = 1,
        heap_mb: int = 512,
        extra_listeners: Mapping[str, str] | None = None,
        extra_properties: Mapping[str, str] | None = None,
        scram_users: Mapping[str, str] | None = None,
        jvm_options: tuple[str, ...] = (),
        _cluster: tuple[str, str, int] | None = None,  # (cluster id, voters, replication)
        _ports: tuple[int, int] | None = None,
    ) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.node_id = node_id
        self.heap_mb = heap_mb
        self.host = HOST
        self.port, self.controller_port = _ports or (free_port(), free_port())
        self.listener_ports = {name: free_port() for name in (extra_listeners or {})}
        self.extra_listeners = dict(extra_listeners or {})
        self.extra_properties = dict(extra_properties or {})
        self.scram_users = dict(scram_users or {})
        self.jvm_options = jvm_options
        self.cluster_id, self.voters, self.replication_factor = _cluster or (
            "",
            f"{node_id}@{HOST}:{self.controller_port}",
            1,
        )
        self.data_dir = workdir / "data"
        self.log_path = workdir / "kafka.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._formatted = False

    @property
    def bootstrap(self) -> str:  # type: ignore[override]
        return f"{self.host}:{self.port}"

    def listener_port(self, name: str) -> int:
        return self.listener_ports[name]

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    # ------------------------------------------------------------------ files
    def _properties(self) -> str:
        rf = self.replication_factor
        listeners = [f"PLAINTEXT://{HOST}:{self.port}", f"CONTROLLER://{HOST}:{self.controller_port}"]
        advertised = [f"PLAINTEXT://{HOST}:{self.port}"]
        protocols = ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"]
        for name, protocol in self.extra_listeners.items():
            listeners.append(f"{name}://{HOST}:{self.listener_ports[name]}")
            advertised.append(f"{name}://{HOST}:{self.listener_ports[name]}")
            protocols.append(f"{name}:{protocol}")
        props = {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            "controller.quorum.voters": self.voters,
            "listeners": ",".join(listeners),
            "advertised.listeners": ",".join(advertised),
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": ",".join(protocols),
            "log.dirs": str(self.data_dir),
            "num.partitions": "1",
            "default.replication.factor": str(rf),
            "min.insync.replicas": str(min(rf, 2)),
            "offsets.topic.replication.factor": str(rf),
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": str(rf),
            "transaction.state.log.min.isr": str(min(rf, 2)),
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": str(rf),
            "share.coordinator.state.topic.min.isr": str(min(rf, 2)),
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "true",
            "unclean.leader.election.enable": "false",
        }
        props.update(self.extra_properties)
        return "".join(f"{k}={v}\n" for k, v in props.items())

    def _write_files(self) -> Path:
        props = self.workdir / "server.properties"
        props.write_text(self._properties())
        (self.workdir / "log4j2.properties").write_text(
            "rootLogger.level=INFO\n"
            "rootLogger.appenderRef.f.ref=F\n"
            "appender.f.type=File\n"
            "appender.f.name=F\n"
            f"appender.f.fileName={self.log_path}\n"
            "appender.f.layout.type=PatternLayout\n"
            "appender.f.layout.pattern=[%d] %p %m (%c)%n\n"
            "logger.kafka.name=kafka\nlogger.kafka.level=WARN\n"
            "logger.org.name=org.apache.kafka\nlogger.org.level=WARN\n"
            "logger.ctl.name=kafka.controller\nlogger.ctl.level=WARN\n"
        )
        return props

    def _java(self, *args: str, heap_mb: int) -> list[str]:
        jars = ensure_kafka_jars()
        java = shutil.which("java")
        if java is None:
            raise TestBedError(java_problem() or "java not found")
        return [
            java,
            f"-Xmx{heap_mb}m",
            f"-Xms{min(heap_mb, 128)}m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.properties'}",
            *self.jvm_options,
            "-cp",
            f"{jars}/*",
            *args,
        ]

    def format(self) -> None:
        """``kafka-storage format``: once per data dir (a restart keeps the data)."""
        if (self.data_dir / "meta.properties").exists():
            self._formatted = True
            return
        props = self._write_files()
        cluster_id = self.cluster_id or uuid.uuid4().hex[:22]
        self.cluster_id = cluster_id
        cmd = self._java(
            "kafka.tools.StorageTool",
            "format",
            # one argument: an id that starts with "-" (1 in 64 of them) is not an option
            f"--cluster-id={_kafka_uuid(cluster_id)}",
            "-c",
            str(props),
            "--ignore-formatted",
            heap_mb=256,
        )
        for user, password in self.scram_users.items():
            cmd += ["--add-scram", f"SCRAM-SHA-512=[name={user},password={password}]"]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise TestBedError(f"kafka-storage format failed:\n{result.stdout}{result.stderr}")
        self._formatted = True

    # ------------------------------------------------------------------ lifecycle
    def launch(self) -> None:
        """Start the JVM without waiting (a cluster starts all nodes, then waits)."""
        if self.running:
            return
        self.format()
        props = self._write_files()
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                self._java("kafka.Kafka", str(props), heap_mb=self.heap_mb),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def start(self, timeout: float = 90.0) -> KafkaNode:
        self.launch()
        self.wait_ready(timeout=timeout)
        return self

    def wait_ready(self, *, timeout: float = 90.0, brokers: int = 1) -> None:
        """Wait until a metadata request to this node lists ``brokers`` brokers, this one included."""
        wait_for(
            f"kafka node {self.node_id} on {self.bootstrap}",
            lambda: self.ping(brokers=brokers),
            timeout=timeout,
            proc=self._proc,
            log=self.log_path,
            interval=0.25,
        )

    def ping(self, *, brokers: int = 1) -> bool:
        try:
            md = _admin(self.bootstrap, **{"socket.connection.setup.timeout.ms": 1000}).list_topics(timeout=2)
        except KafkaException:
            return False
        return self.node_id in md.brokers and len(md.brokers) >= brokers

    def stop(self) -> None:
        """Clean shutdown (SIGTERM): the broker flushes and closes its logs."""
        if self._proc is not None:
            stop_process(self._proc, timeout=60)
            self._proc = None

    def kill(self) -> None:
        """``kill -9``: no shutdown hook runs, as on a crash."""
        if self._proc is not None:
            stop_process(self._proc, kill=True)
            self._proc = None

    def restart(self, *, kill: bool = False, timeout: float = 120.0) -> None:
        """Stop (or kill) and start again on the same ports with the same data dir."""
        self.kill() if kill else self.stop()
        self.start(timeout=timeout)

    def log_tail(self, lines: int = 40) -> str:
        return tail(self.log_path, lines)

    def __enter__(self) -> KafkaNode:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class KafkaCluster(_TopicsMixin):
    """Three (or ``size``) KRaft nodes, each broker + controller, replication factor 3."""

    def __init__(self, workdir: Path, *, size: int = 3, heap_mb: int = 384) -> None:
        ports = [(free_port(), free_port()) for _ in range(size)]
        voters = ",".join(f"{i + 1}@{HOST}:{c}" for i, (_, c) in enumerate(ports))
        cluster = (uuid.uuid4().hex[:22], voters, min(size, 3))
        self.replication_factor = cluster[2]
        self.nodes = [
            KafkaNode(
                workdir / f"node{i + 1}", node_id=i + 1, heap_mb=heap_mb, _cluster=cluster, _ports=ports[i]
            )
            for i in range(size)
        ]

    @property
    def bootstrap(self) -> str:  # type: ignore[override]
        return ",".join(n.bootstrap for n in self.nodes)

    def start(self, timeout: float = 120.0) -> KafkaCluster:
        for node in self.nodes:
            node.launch()
        for node in self.nodes:
            node.wait_ready(timeout=timeout, brokers=len(self.nodes))
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def kill(self) -> None:
        """``kill -9`` every node: the end of a throwaway cluster. Once a node is gone, a clean
        stop of the others can wait out its whole timeout: the last ones lose the controller
        quorum and their controlled shutdown never completes."""
        for node in self.nodes:
            node.kill()

    def node(self, node_id: int) -> KafkaNode:
        return self.nodes[node_id - 1]

    def leader_of(self, topic: str, partition: int = 0) -> int:
        md = self.admin().list_topics(topic, timeout=10)
        return int(md.topics[topic].partitions[partition].leader)

    def __iter__(self) -> Iterator[KafkaNode]:
        return iter(self.nodes)

    def __enter__(self) -> KafkaCluster:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _kafka_uuid(seed: str) -> str:
    """A Kafka cluster id: 16 bytes, URL-safe base64 without padding (22 chars)."""
    import base64  # noqa: PLC0415

    raw = uuid.uuid5(uuid.NAMESPACE_OID, seed).bytes
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")
