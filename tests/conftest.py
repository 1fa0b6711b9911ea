"""Session-scoped fixtures that start the real brokers of the test bed.

Each test gets its own topics (``topic_prefix``), so tests share brokers but not data.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from simulators.testbed import (
    FuseUnavailableError,
    KafkaCluster,
    KafkaEndpoint,
    KafkaNode,
    Mosquitto,
    PowerCutFS,
    ensure_kafka_jars,
    fuse_problem,
    java_problem,
    kafka_from_env,
)
from simulators.testbed.kafka import kafka_version


def _announce(config: pytest.Config, message: str) -> None:
    """Print a line on the terminal even while pytest captures output."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        return
    with capture.global_and_fixture_disabled():
        reporter.ensure_newline()
        reporter.write_line(f"[testbed] {message}", cyan=True)


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config) -> Iterator[Mosquitto]:
    """Anonymous Mosquitto on a free 127.0.0.1 port."""
    broker = Mosquitto(tmp_path_factory.mktemp("mosquitto"))
    broker.start()
    _announce(
        pytestconfig, f"mosquitto {broker.binary} listening on {broker.host}:{broker.port} (pid {broker.pid})"
    )
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def mosquitto_tls(
    tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> Iterator[Mosquitto]:
    """Mosquitto with TLS (a throwaway CA) and a password file; user ``edgegw``, see ``.users``."""
    broker = Mosquitto(
        tmp_path_factory.mktemp("mosquitto-tls"),
        tls=True,
        users={"edgegw": secrets.token_urlsafe(16)},
    )
    broker.start()
    _announce(
        pytestconfig,
        f"mosquitto (TLS + password) listening on {broker.host}:{broker.port} (pid {broker.pid})",
    )
    yield broker
    broker.stop()


@pytest.fixture
def topic_prefix(request: pytest.FixtureRequest) -> str:
    """A topic prefix unique to this test (MQTT topics and Kafka topic names alike)."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", request.node.name)[:60].strip("-")
    return f"t-{name}-{secrets.token_hex(3)}"


@pytest.fixture
def mosquitto_workdir(tmp_path: Path) -> Path:
    """A private directory for a test that starts its own Mosquitto (restarts, kills)."""
    return tmp_path / "mosquitto"


# ---------------------------------------------------------------------- Kafka
def _kafka_unavailable(config: pytest.Config) -> None:
    """Skip (or, in CI, fail) when this machine cannot run the Kafka test broker."""
    problem = java_problem()
    if problem is None:
        return
    if os.environ.get("EDGEGW_REQUIRE_KAFKA") == "1":
        pytest.fail(f"Kafka test broker required (EDGEGW_REQUIRE_KAFKA=1) but: {problem}")
    pytest.skip(problem)


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config) -> Iterator[KafkaEndpoint]:
    """One Kafka for the whole session: ``EDGEGW_TEST_KAFKA`` if set, else a local KRaft node."""
    external = kafka_from_env()
    if external is not None:
        _announce(pytestconfig, f"kafka: using the existing cluster at {external.bootstrap}")
        yield external
        return
    _kafka_unavailable(pytestconfig)
    node = KafkaNode(tmp_path_factory.mktemp("kafka"))
    _announce(pytestconfig, f"kafka: jars from Maven Central in {ensure_kafka_jars()}")
    node.start()
    _announce(pytestconfig, f"kafka {kafka_version()} (KRaft) ready on {node.bootstrap} (pid {node.pid})")
    yield node
    node.stop()


@pytest.fixture
def kafka_node(tmp_path: Path, pytestconfig: pytest.Config) -> Iterator[KafkaNode]:
    """A private single Kafka node that the test may stop, kill -9 and restart."""
    _kafka_unavailable(pytestconfig)
    node = KafkaNode(tmp_path / "kafka")
    node.start()
    yield node
    node.stop()


@pytest.fixture
def kafka_cluster(tmp_path: Path, pytestconfig: pytest.Config) -> Iterator[KafkaCluster]:
    """Three KRaft nodes (replication factor 3, min ISR 2) for failover tests."""
    _kafka_unavailable(pytestconfig)
    cluster = KafkaCluster(tmp_path / "kafka-cluster")
    cluster.start()
    _announce(pytestconfig, f"kafka 3-node cluster ready on {cluster.bootstrap}")
    yield cluster
    cluster.kill()  # its data goes with tmp_path; a clean stop after a failover takes a minute


@pytest.fixture
def kafka_topic(kafka: KafkaEndpoint, topic_prefix: str) -> str:
    """A fresh topic (1 partition) on the session Kafka, named for this test."""
    return kafka.create_topic(topic_prefix)


ARTIFACTS = Path(os.environ.get("EDGEGW_TEST_ARTIFACTS") or Path(__file__).parents[1] / "test-artifacts")


@pytest.fixture
def artifacts_dir(request: pytest.FixtureRequest) -> Path:
    """A folder kept after the run (``test-artifacts/<test>``) for screenshots and the like."""
    folder = ARTIFACTS / re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def chromium_executable() -> str | None:
    """Debian's chromium (or ``EDGEGW_CHROMIUM``); playwright never downloads its own here."""
    return os.environ.get("EDGEGW_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def browser_page() -> Iterator[Any]:
    """A page in a real headless chromium, driven by playwright's sync API (use from sync tests).

    Skips (or, with ``EDGEGW_REQUIRE_BROWSER=1`` as in CI, fails) where chromium or
    playwright is missing; ``./scripts/test`` installs both.
    """
    executable = chromium_executable()
    try:
        from playwright.sync_api import sync_playwright  # noqa: PLC0415 - the Pi's test run has no playwright
    except ImportError:
        executable = None
    if executable is None:
        message = "headless chromium and playwright are needed (./scripts/test installs them)"
        if os.environ.get("EDGEGW_REQUIRE_BROWSER") == "1":
            pytest.fail(f"browser required (EDGEGW_REQUIRE_BROWSER=1) but: {message}")
        pytest.skip(message)
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            yield page
        finally:
            browser.close()


def fuse_unavailable(reason: str) -> None:
    """Skip (or, with ``EDGEGW_REQUIRE_FUSE=1`` as in CI, fail) where FUSE cannot run."""
    if os.environ.get("EDGEGW_REQUIRE_FUSE") == "1":
        pytest.fail(f"FUSE required (EDGEGW_REQUIRE_FUSE=1) but: {reason}")
    pytest.skip(reason)


@pytest.fixture
def powercut_fs(tmp_path: Path) -> Iterator[PowerCutFS]:
    """A mounted power-cut file system (simulators/testbed/powercut.py), unmounted after."""
    problem = fuse_problem()
    if problem is not None:
        fuse_unavailable(problem)
    bed = PowerCutFS(tmp_path / "backing", tmp_path / "mnt")
    try:
        bed.mount()
    except FuseUnavailableError as exc:
        fuse_unavailable(str(exc))
    try:
        yield bed
    finally:
        bed.unmount()
