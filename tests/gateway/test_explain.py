"""`edgegw rules explain RULE_ID` shows why a rule of a running gateway fired."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from simulators.testbed import Mosquitto, free_port

pytestmark = pytest.mark.mqtt


def _wait_http(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{url} never answered 200")


def test_explain_shows_the_fire_and_its_values(
    mosquitto: Mosquitto, tmp_path: Path, topic_prefix: str
) -> None:
    port = free_port()
    config = tmp_path / "edgegw.yaml"
    config.write_text(
        f"""
gateway: {{id: explain-test, state_dir: {tmp_path / "state"}}}
mqtt: {{host: {mosquitto.host}, port: {mosquitto.port}, client_id: {topic_prefix}}}
devices:
  - {{id: hall, topic: {topic_prefix}/hall, profile: json}}
actuators:
  - {{id: hall/light, profile: json, topic: {topic_prefix}/light/set}}
rules:
  - id: hall-hot
    when: {{sensor: hall/temperature, above: 25}}
    then: [{{set: hall/light, to: {{state: "on"}}}}]
http: {{port: {port}}}
"""
    )
    gateway = subprocess.Popen([sys.executable, "-m", "gateway", "run", "--config", str(config)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    try:
        _wait_http(f"http://127.0.0.1:{port}/healthz")
        pub = mosquitto.client()
        pub.connect(mosquitto.host, mosquitto.port)
        pub.loop_start()
        pub.publish(f"{topic_prefix}/hall", json.dumps({"temperature": 27.5}), qos=1).wait_for_publish(5)
        pub.loop_stop()
        pub.disconnect()
        deadline = time.monotonic() + 10
        out = ""
        while time.monotonic() < deadline:
            result = subprocess.run(
                [sys.executable, "-m", "gateway", "rules", "explain", "hall-hot", "--config", str(config)],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            out = result.stdout
            if result.returncode == 0 and "hall/temperature=27.5" in out:
                break
            time.sleep(0.2)
        assert out.startswith("rule hall-hot: fired; condition met"), out
        assert "fired:" in out
        assert "hall/temperature=27.5" in out
        unknown = subprocess.run(
            [sys.executable, "-m", "gateway", "rules", "explain", "nope", "--url", f"http://127.0.0.1:{port}"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert unknown.returncode == 2
        assert "no rule 'nope'" in unknown.stderr
        assert "hall-hot" in unknown.stderr
    finally:
        gateway.terminate()
        _, errors = gateway.communicate(timeout=15)
    assert gateway.returncode == 0, errors.decode(errors="replace")[-2000:]
