"""``edgegw demo --fleet``: three simulated gateways ship to Kafka and the fleet view, on the
address it prints, shows them online with their devices while the demo runs."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from simulators.testbed import KafkaEndpoint, free_port
from tests.fleet.helpers import until

pytestmark = [pytest.mark.mqtt, pytest.mark.kafka, pytest.mark.slow]


def test_the_fleet_demo_shows_three_gateways_on_the_printed_address(
    kafka: KafkaEndpoint, tmp_path: Path
) -> None:
    listen = f"127.0.0.1:{free_port()}"
    demo = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gateway",
            "demo",
            "--fleet",
            "--kafka",
            kafka.bootstrap,
            "--duration",
            "20",
            "--fleet-listen",
            listen,
            "--workdir",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"},
    )
    try:
        assert demo.stdout is not None
        lines = []
        for line in demo.stdout:
            lines.append(line)
            if line.startswith("fleet view"):
                break
        assert f"http://{listen}/" in lines[-1], "".join(lines)

        def homes() -> list[dict[str, Any]]:
            with urllib.request.urlopen(f"http://{listen}/api/gateways", timeout=5) as resp:
                return [g for g in json.loads(resp.read()) if g["gateway_id"].startswith("home-")]

        until(
            lambda: (
                [(g["gateway_id"], g["online"], g["devices"] > 0) for g in homes()]
                == [("home-1", True, True), ("home-2", True, True), ("home-3", True, True)]
            ),
            "three demo gateways online with devices in the fleet view",
            timeout=40,
            interval=0.5,
        )
        demo.send_signal(signal.SIGINT)  # Ctrl-C, as a person stops it
        rest, _ = demo.communicate(timeout=60)
        assert demo.returncode == 0, "".join(lines) + rest
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.communicate()
