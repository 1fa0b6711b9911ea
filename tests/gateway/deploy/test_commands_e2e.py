"""Commands and the central CLI end to end: the real Kafka, Mosquitto and `edgegw run`.

- a command delivered twice runs once and is confirmed by read-back; one for an
  undeclared actuator is refused; one whose ``expires_at`` passed while the gateway was
  down is reported expired and never runs; a command id is remembered across restarts;
- ``edgegw command`` prints the result; ``edgegw deploy --group`` waits for both
  gateways of the group (found by their heartbeats) and exits 0 when both applied;
- ``edgegw deploy`` checks the document first: an error is printed at file:line:column
  and nothing is written.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bridge.central import latest_per_key
from simulators.testbed import Mosquitto, free_port
from tests.gateway.conftest import ROOT, Gateway, TopicWatch, publish, read_kafka
from tests.gateway.deploy.conftest import GARAGE, GARAGE_SET, HEATING, THERMOSTAT, Cloud, cloud_config

pytestmark = [pytest.mark.kafka, pytest.mark.mqtt]

MakeGateway = Callable[[Path, int], Gateway]
MakeWatch = Callable[[list[str]], TopicWatch]
RESULT = "edgegw.command.result.v1"


def _edgegw(*args: str, timeout: float = 90.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def _results(cloud: Cloud, until: Callable[[dict[str, list[str]]], bool]) -> dict[str, list[str]]:
    """command_id -> the statuses reported for it, in order."""

    def by_id(records: list[object]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for r in records:
            out.setdefault(r.value["command_id"], []).append(r.value["status"])  # type: ignore[attr-defined]
        return out

    return by_id(cloud.events(RESULT, lambda es: until(by_id(es))))  # type: ignore[arg-type]


def test_commands_run_at_most_once_never_late_and_only_on_declared_actuators(
    broker: Mosquitto, tmp_path: Path, http_port: int, gateways: MakeGateway, watch: MakeWatch, cloud: Cloud
) -> None:
    config_path, config = cloud_config(tmp_path, broker, cloud, http_port=http_port, rules=[HEATING])
    gid = config["gateway"]["id"]
    commands = watch([THERMOSTAT, GARAGE_SET])
    gateway = gateways(config_path, http_port).start()

    twice = cloud.command(gid, "garage/light", {"state": "on"})
    cloud.command(gid, "garage/light", {"state": "on"}, command_id=twice)
    assert commands.wait_for(GARAGE_SET)[0].json() == {"state": "on"}
    publish(broker, [("zigbee2mqtt/garage-light", {"state": "ON"})])  # the light's read-back
    attic = cloud.command(gid, "attic/fan", {"state": "on"})
    seen = _results(cloud, lambda r: twice in r and attic in r)
    assert seen[twice] == ["confirmed"]
    assert seen[attic] == ["refused"]
    assert len(commands.on(GARAGE_SET)) == 1

    # the CLI: one command, its result printed
    sent = _edgegw(
        "command",
        gid,
        "living-room/thermostat",
        '{"state": "heat"}',
        "--kafka",
        cloud.kafka.bootstrap,
        "--commands-topic",
        cloud.commands,
        "--events-topic",
        cloud.topics.events,
        "--timeout",
        "60",
    )
    assert sent.returncode == 0, sent.stderr
    result = json.loads(sent.stdout.strip().splitlines()[-1])
    assert (result["status"], result["actuator"], result["gateway_id"]) == (
        "sent",
        "living-room/thermostat",
        gid,
    )
    assert commands.wait_for(THERMOSTAT)[0].json() == {"state": "heat"}
    refused = metrics_refused(gateway)
    assert refused == 1

    # down for a while: a command expires meanwhile, an old one comes again
    assert gateway.terminate()[0] == 0
    late = cloud.command(gid, "living-room/thermostat", {"state": "idle"}, expires_in=1.0)
    cloud.command(gid, "garage/light", {"state": "on"}, command_id=twice)
    time.sleep(1.5)
    gateway = gateways(config_path, http_port).start()
    seen = _results(cloud, lambda r: late in r)
    assert seen[late] == ["expired"]
    assert seen[twice] == ["confirmed"]
    time.sleep(1.0)
    assert [m.json() for m in commands.on(THERMOSTAT)] == [{"state": "heat"}]
    assert len(commands.on(GARAGE_SET)) == 1
    assert gateway.terminate()[0] == 0


def metrics_refused(gateway: Gateway) -> float:
    return sum(
        v
        for (n, labels), v in gateway.metrics().items()
        if n == "edgegw_cloud_refused_total" and ("what", "command") in labels
    )


def test_deploy_to_a_group_waits_for_both_gateways(
    broker: Mosquitto, tmp_path: Path, gateways: MakeGateway, cloud: Cloud
) -> None:
    ports = {"floor-a": free_port(), "floor-b": free_port()}
    for gid, port in ports.items():
        path, _config = cloud_config(
            tmp_path,
            broker,
            cloud,
            http_port=port,
            rules=[HEATING],
            group=["floor"],
            name=f"{gid}.yaml",
            gateway_id=f"{gid}-{cloud.desired[-6:]}",
        )
        gateways(path, port).start()
    ids = {f"{gid}-{cloud.desired[-6:]}" for gid in ports}
    read_kafka(
        cloud.kafka.bootstrap,
        [cloud.topics.heartbeats],
        until=lambda rs: {r.key for r in rs if "floor" in r.value.get("groups", [])} >= ids,
    )

    doc = tmp_path / "floor.yaml"
    doc.write_text(json.dumps({"rules": [HEATING, GARAGE]}))
    done = _edgegw(
        "deploy",
        str(doc),
        "--group",
        "floor",
        "--kafka",
        cloud.kafka.bootstrap,
        "--desired-topic",
        cloud.desired,
        "--events-topic",
        cloud.topics.events,
        "--heartbeats-topic",
        cloud.topics.heartbeats,
        "--timeout",
        "60",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(line for line in done.stdout.splitlines() if line.endswith(": applied")) == sorted(
        f"{gid}: applied" for gid in ids
    )
    assert "v1 -> group/floor" in done.stderr  # the progress line
    assert (
        json.loads(
            latest_per_key({"bootstrap.servers": cloud.kafka.bootstrap}, cloud.desired)["group/floor"]
        )["version"]
        == 1
    )


def test_deploy_checks_the_document_before_writing_it(tmp_path: Path) -> None:
    doc = tmp_path / "bad.yaml"
    doc.write_text(
        "rules:\n  - id: x\n    when: {sensor: temp-01/temperature, below: cold}\n    then: []\n"
        "bridge: {spool: {max_bytes: 1}}\n"
    )
    done = _edgegw("deploy", str(doc), "--gateway", "hall-pi", "--kafka", "127.0.0.1:9")
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert any(line.startswith(f"error: {doc}:3:") and "below" in line for line in errors), errors
    assert any(line.startswith(f"error: {doc}:5:1: bridge: refused: the spool") for line in errors), errors
