"""Deployments end to end: the real Kafka, the real Mosquitto, `edgegw run` as a process.

- version 2 deployed to a running gateway is applied (an applied event in Kafka) and a
  rule that did not change keeps its pending ``for`` timer; every reading published
  before, between and after four deployments reaches Kafka exactly once, none dropped
  (a deployment is a reload: the spool keeps every row it holds);
- a document with an error is rejected with file:line:column errors and the old rules
  keep running; refused sections are named with their reason;
- a gateway that was stopped while versions 3, 4 and 5 were written applies 5 only
  (which brings an actuator of its own, and a rule naming it, that acts);
- a document that passes validation but makes a rule trip its loop guard is rolled back
  by itself, with a rolled-back event, and the last-good rules run again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from simulators.testbed import Mosquitto
from tests.gateway.conftest import Gateway, TopicWatch, publish, read_kafka
from tests.gateway.deploy.conftest import (
    ACTUATORS,
    GARAGE,
    GARAGE_SET,
    HEATING,
    THERMOSTAT,
    Cloud,
    cloud_config,
    version_of,
)

pytestmark = [pytest.mark.kafka, pytest.mark.mqtt]

MakeGateway = Callable[[Path, int], Gateway]
MakeWatch = Callable[[list[str]], TopicWatch]
APPLIED, REJECTED = "edgegw.deployment.applied.v1", "edgegw.deployment.rejected.v1"
ROLLED_BACK = "edgegw.deployment.rolled_back.v1"


def _metric(gateway: Gateway, name: str) -> float:
    return sum(v for (n, _labels), v in gateway.metrics().items() if n == name)


def _warm(n: int) -> list[tuple[str, Any]]:
    return [("zigbee2mqtt/temp-03", {"temperature": 20 + (i % 3) / 10}) for i in range(n)]


def test_deploy_applies_keeps_timers_and_spool_rows_and_rejects_errors(
    broker: Mosquitto, tmp_path: Path, http_port: int, gateways: MakeGateway, watch: MakeWatch, cloud: Cloud
) -> None:
    config_path, config = cloud_config(tmp_path, broker, cloud, http_port=http_port, rules=[HEATING])
    gid = config["gateway"]["id"]
    commands = watch([THERMOSTAT, GARAGE_SET])
    gateway = gateways(config_path, http_port).start()
    published = 0

    # a cold living room: the heating rule's 10 s `for` timer starts now
    publish(broker, [("zigbee2mqtt/temp-01", {"temperature": 15}), *_warm(50)])
    published += 51
    cloud.deploy(gid, 2, rules=[HEATING, GARAGE])
    applied = cloud.events(APPLIED, lambda es: any(version_of(e) == 2 for e in es))
    assert [(version_of(e), e.value["source"]) for e in applied] == [(2, gid)]
    assert applied[0].value["digest"].startswith("sha256:")
    assert applied[0].headers["ce_source"] == f"edgegw://{gid}/deployment"
    assert commands.on(THERMOSTAT) == []  # applied while the heating rule's timer runs
    # the unchanged heating rule kept its pending timer: it fires with no new reading
    assert [m.json() for m in commands.wait_for(THERMOSTAT, timeout=30)] == [{"state": "heat"}]
    publish(broker, [("zigbee2mqtt/temp-03", {"temperature": 31})])  # the deployed rule acts
    published += 1
    assert commands.wait_for(GARAGE_SET)[0].json() == {"state": "on"}
    assert _metric(gateway, "edgegw_deployment_version") == 2
    code, body = gateway.get("/api/status")  # the status page says what runs
    assert (code, json.loads(body)["gateway"]["config"]["deployment"]) == (200, f"v2 from {gid}")

    # an error: rejected, located in the document, nothing else changes
    bad = (
        "version: 3\nrules:\n  - id: attic\n    when: {sensor: temp-03/temperature, above: 30}\n"
        '    then: [{set: attic/fan, to: {state: "on"}}]\nhttp: {port: 80}\n'
    )
    publish(broker, _warm(50))
    published += 50
    cloud.deploy_text(gid, bad)
    rejected = cloud.events(REJECTED, lambda es: any(version_of(e) == 3 for e in es))
    texts = [e["text"] for e in rejected[0].value["errors"]]
    assert any(t.startswith(f"desired[{gid}]@v3:5:") and "attic/fan" in t for t in texts), texts
    assert any(t.startswith(f"desired[{gid}]@v3:6:1: http: refused: the HTTP listener") for t in texts), texts
    assert gateway.running
    assert _metric(gateway, "edgegw_deployment_version") == 2
    publish(
        broker, [("zigbee2mqtt/temp-03", {"temperature": 20}), ("zigbee2mqtt/temp-03", {"temperature": 32})]
    )
    published += 2
    assert len(commands.wait_for(GARAGE_SET, 2)) == 2  # the v2 rules still run

    # too large (the default bound is 256 KiB): rejected unread, counted
    cloud.deploy_text(gid, "version: 4\n" + "#" * 300_000 + "\nrules: []\n")
    unread = cloud.events(REJECTED, lambda es: any(e.value["version"] is None for e in es))
    assert "larger than max_document_bytes" in unread[-1].value["errors"][0]["text"]
    refused = [v for (n, labels), v in gateway.metrics().items() if n == "edgegw_cloud_refused_total"
               and ("what", "document") in labels]  # fmt: skip
    assert refused == [2]

    # v4 and v5 while readings flow: every reading reaches Kafka once, none dropped
    for version in (4, 5):
        publish(broker, _warm(100))
        published += 100
        cloud.deploy(
            gid, version, rules=[HEATING, {**GARAGE, "when": {**GARAGE["when"], "above": 25 + version}}]
        )
    cloud.events(APPLIED, lambda es: any(version_of(e) == 5 for e in es))
    records = read_kafka(
        cloud.kafka.bootstrap, [cloud.topics.readings], until=lambda rs: len(rs) >= published
    )
    assert len(records) == published
    assert len({(r.headers["ce_id"]) for r in records}) == published
    assert _metric(gateway, "edgegw_spool_dropped_total") == 0
    assert _metric(gateway, "edgegw_readings_total") == published

    # the heartbeat says what runs
    def runs_v5(rs: list[Any]) -> bool:
        return any((r.value.get("deployment") or {}).get("version") == 5 for r in rs)

    beats = read_kafka(cloud.kafka.bootstrap, [cloud.topics.heartbeats], until=runs_v5)
    last = next(r for r in reversed(beats) if r.value.get("deployment"))
    assert last.value["deployment"] == {
        "version": 5,
        "digest": last.value["deployment"]["digest"],
        "source": gid,
    }
    status, health = gateway.healthz()
    assert status == 200
    assert health["components"]["cloud"]["applied_version"] == 5
    code, _took = gateway.terminate()
    assert code == 0


ATTIC_FAN = {"id": "attic/fan", "profile": "zigbee2mqtt", "name": "attic-fan"}
ATTIC: dict[str, Any] = {
    "id": "attic-fan",
    "when": {"sensor": "temp-03/temperature", "above": 30},
    "then": [{"set": "attic/fan", "to": {"state": "on"}}],
}


def test_a_gateway_that_was_offline_applies_the_newest_version_only(
    broker: Mosquitto, tmp_path: Path, http_port: int, gateways: MakeGateway, watch: MakeWatch, cloud: Cloud
) -> None:
    config_path, config = cloud_config(tmp_path, broker, cloud, http_port=http_port, rules=[HEATING])
    commands = watch(["zigbee2mqtt/attic-fan/set"])
    gid = config["gateway"]["id"]
    gateway = gateways(config_path, http_port).start()
    cloud.deploy(gid, 2, rules=[HEATING])
    cloud.events(APPLIED, lambda es: any(version_of(e) == 2 for e in es))
    gateway.terminate()

    for version in (3, 4):
        cloud.deploy(
            gid, version, rules=[HEATING, {**GARAGE, "when": {**GARAGE["when"], "above": 20 + version}}]
        )
    # version 5 brings an actuator of its own, and a rule that names it
    cloud.deploy(gid, 5, rules=[HEATING, ATTIC], actuators=[*ACTUATORS, ATTIC_FAN])
    gateway = gateways(config_path, http_port).start()
    applied = cloud.events(APPLIED, lambda es: any(version_of(e) == 5 for e in es))
    assert [version_of(e) for e in applied] == [2, 5]
    assert applied[-1].value["sections"] == ["rules", "actuators"]
    publish(broker, [("zigbee2mqtt/temp-03", {"temperature": 31})])
    assert commands.wait_for("zigbee2mqtt/attic-fan/set")[0].json() == {"state": "on"}
    time.sleep(2)  # anything else it would say comes within its settle time
    rules = gateway.wait_log("deployment applied")
    assert rules["version"] == 5
    assert [version_of(e) for e in cloud.events(REJECTED, lambda es: True, timeout=3)] == []

    # a restart re-reads the topic and changes nothing (idempotent)
    gateway.terminate()
    gateway = gateways(config_path, http_port).start()
    gateway.wait_log("running the last-good deployment")
    time.sleep(3)
    assert [
        version_of(e) for e in cloud.events(APPLIED, lambda es: len(es) > 2, timeout=4, required=False)
    ] == [2, 5]
    assert gateway.terminate()[0] == 0


FLAPPING: dict[str, Any] = {
    "id": "flapping",
    "when": {"sensor": "temp-03/temperature", "above": 25},
    "then": [{"set": "garage/light", "to": {"state": "on"}}],
    "else": [{"set": "garage/light", "to": {"state": "off"}}],
    "max_fires_per_minute": 2,
}


def test_a_deployment_that_trips_a_loop_guard_is_rolled_back(
    broker: Mosquitto, tmp_path: Path, http_port: int, gateways: MakeGateway, watch: MakeWatch, cloud: Cloud
) -> None:
    config_path, config = cloud_config(
        tmp_path, broker, cloud, http_port=http_port, rules=[HEATING], settle="4s"
    )
    gid = config["gateway"]["id"]
    commands = watch([GARAGE_SET])
    gateway = gateways(config_path, http_port).start()
    cloud.deploy(gid, 2, rules=[HEATING, GARAGE])
    cloud.events(APPLIED, lambda es: any(version_of(e) == 2 for e in es))

    cloud.deploy(gid, 3, rules=[HEATING, FLAPPING])
    gateway.wait_log("deployment v3")  # v3's rules are in force: the flaps reach them
    flaps = [("zigbee2mqtt/temp-03", {"temperature": 30 if i % 2 == 0 else 20}) for i in range(8)]
    publish(broker, flaps)
    rolled = cloud.events(ROLLED_BACK, lambda es: any(version_of(e) == 3 for e in es))
    assert "rule flapping tripped its loop guard" in rolled[0].value["reason"]
    assert rolled[0].value["restored_version"] == 2
    # the last-good rules run again: the garage rule (above 25) turns the light on, and
    # only once per crossing
    sent = len(commands.on(GARAGE_SET))
    publish(
        broker, [("zigbee2mqtt/temp-03", {"temperature": 20}), ("zigbee2mqtt/temp-03", {"temperature": 31})]
    )
    assert commands.wait_for(GARAGE_SET, sent + 1)[-1].json() == {"state": "on"}
    _status, health = gateway.healthz()
    assert health["components"]["cloud"]["applied_version"] == 2
    assert health["components"]["rules"]["loaded"] == 2
    assert gateway.terminate()[0] == 0


def test_a_gateway_killed_during_the_settle_time_rolls_back_at_its_next_start(
    broker: Mosquitto, tmp_path: Path, http_port: int, gateways: MakeGateway, cloud: Cloud
) -> None:
    config_path, config = cloud_config(
        tmp_path, broker, cloud, http_port=http_port, rules=[HEATING], settle="60s"
    )
    gid = config["gateway"]["id"]
    gateway = gateways(config_path, http_port).start()
    cloud.deploy(gid, 2, rules=[HEATING, GARAGE])
    gateway.wait_log("applying deployment")
    gateway.kill()  # as a deployment that crashes the gateway would

    gateway = gateways(config_path, http_port).start()
    rolled = cloud.events(ROLLED_BACK, lambda es: any(version_of(e) == 2 for e in es))
    assert "stopped during the settle time" in rolled[0].value["reason"]
    assert rolled[0].value["restored_version"] is None
    _status, health = gateway.healthz()
    assert health["components"]["rules"]["loaded"] == 1  # the local file alone, not v2 again
    assert health["components"]["cloud"]["decided_version"] == 2
    assert gateway.terminate()[0] == 0
