"""What systemd/edgegw.service expects of `edgegw run`, checked without systemd.

The test plays systemd: it binds the notify socket, sets NOTIFY_SOCKET, WATCHDOG_USEC,
WATCHDOG_PID-less environment and STATE_DIRECTORY as the unit would, starts
`edgegw run --config FILE` against the real test Mosquitto, and checks:

- READY=1 arrives (MQTT connected, spool open, rules loaded; no Kafka configured);
- WATCHDOG=1 pings keep arriving, more often than WatchdogSec=;
- SIGHUP (ExecReload=) reloads: READY=1 again, after an optional RELOADING=1;
- SIGTERM: STOPPING=1, then exit status 0 within 10 s (TimeoutStopSec= is 20 s).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from simulators.testbed import Mosquitto
from tests.systemd.conftest import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.mqtt]

WATCHDOG_USEC = 2_000_000  # 2 s: pings expected at least every second


class NotifySocket:
    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="sdn-")
        self.path = os.path.join(self._dir.name, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)

    def wait_for(self, key: str, timeout: float) -> list[dict[str, str]]:
        """Messages up to and including the first one carrying ``key``."""
        seen: list[dict[str, str]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536).decode()
            except TimeoutError:
                break
            message = dict(line.split("=", 1) for line in data.split("\n") if "=" in line)
            seen.append(message)
            if key in message:
                return seen
        raise AssertionError(f"no {key} within {timeout} s; got {seen}")

    def close(self) -> None:
        self.sock.close()
        self._dir.cleanup()


@pytest.fixture
def notify() -> Iterator[NotifySocket]:
    sock = NotifySocket()
    yield sock
    sock.close()


def test_run_speaks_the_units_protocol(mosquitto: Mosquitto, notify: NotifySocket, tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    config = tmp_path / "edgegw.yaml"
    config.write_text(
        f"""\
mqtt: {{host: {mosquitto.host}, port: {mosquitto.port}, client_id: run-contract}}
bridge:
  spool: {{path: {state / "spool.db"}}}
http: {{host: 127.0.0.1, port: 0}}
"""
    )
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "NOTIFY_SOCKET": notify.path,
        "WATCHDOG_USEC": str(WATCHDOG_USEC),
        "STATE_DIRECTORY": str(state),
        "JOURNAL_STREAM": "8:12345",  # as under systemd: JSON logs
    }
    env.pop("WATCHDOG_PID", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "run", "--config", str(config)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
    )
    try:
        notify.wait_for("READY", timeout=60)

        # the watchdog: at least two pings within one WatchdogSec=
        pings = [m for m in notify.wait_for("WATCHDOG", timeout=WATCHDOG_USEC / 1e6) if "WATCHDOG" in m]
        pings += [m for m in notify.wait_for("WATCHDOG", timeout=WATCHDOG_USEC / 1e6) if "WATCHDOG" in m]
        assert len(pings) >= 2

        process.send_signal(signal.SIGHUP)
        reload = notify.wait_for("READY", timeout=30)
        reloading = [m for m in reload if "RELOADING" in m]
        if reloading:
            assert "MONOTONIC_USEC" in reloading[0]
        assert process.poll() is None, "SIGHUP must reload, not stop"

        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        notify.wait_for("STOPPING", timeout=10)
        code = process.wait(timeout=10)
        assert code == 0
        assert time.monotonic() - started < 10
    finally:
        if process.poll() is None:
            process.kill()
        output = process.communicate(timeout=10)[0]
        print(output[-4000:])
