"""Session-scoped fixtures that start the real brokers of the test bed.

Each test gets its own topics (``topic_prefix``), so tests share brokers but not data.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from simulators.testbed import Mosquitto


def _announce(config: pytest.Config, message: str) -> None:
    """Print a line on the terminal even while pytest captures output."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"[testbed] {message}")


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config) -> Iterator[Mosquitto]:
    """Anonymous Mosquitto on a free 127.0.0.1 port."""
    broker = Mosquitto(tmp_path_factory.mktemp("mosquitto"))
    broker.start()
    _announce(pytestconfig, f"mosquitto {broker.binary} listening on {broker.host}:{broker.port} (pid {broker.pid})")
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def mosquitto_tls(tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config) -> Iterator[Mosquitto]:
    """Mosquitto with TLS (a throwaway CA) and a password file; user ``edgegw``, see ``.users``."""
    broker = Mosquitto(
        tmp_path_factory.mktemp("mosquitto-tls"),
        tls=True,
        users={"edgegw": secrets.token_urlsafe(16)},
    )
    broker.start()
    _announce(pytestconfig, f"mosquitto (TLS + password) listening on {broker.host}:{broker.port} (pid {broker.pid})")
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
