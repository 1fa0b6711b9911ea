"""Three real ``edgegw run`` gateways (simulated devices over the real Mosquitto, the real
Kafka) and ``edgegw fleet serve``: what the operator sees in the fleet view.

- every device of every gateway with its last value and exactly the readings the
  simulated fleet sent; the rules that fired (as many as Kafka holds) and the commands;
- a gateway stopped shows offline within 3 heartbeat intervals (1 s here), timed at its
  last heartbeat + 3 intervals, and online again once it runs again.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from simulators.testbed import KafkaEndpoint, Mosquitto, free_port
from tests.fleet.helpers import FleetProcess, independent_counts, until, write_fleet_config
from tests.gateway.conftest import (
    DEMO_RULES,
    Gateway,
    expected_readings,
    gateway_config,
    kafka_topics,
    publish,
    simulate,
    write_config,
)

pytestmark = [pytest.mark.kafka, pytest.mark.mqtt, pytest.mark.slow]

HEARTBEAT_S = 1.0


def test_three_gateways_in_the_fleet_view_and_one_going_offline_and_back(
    kafka: KafkaEndpoint,
    broker: Mosquitto,
    tmp_path: Path,
    topic_prefix: str,
    gateways: Callable[[Path, int], Gateway],
) -> None:
    topics = kafka_topics(kafka, topic_prefix)
    fleet_config = write_fleet_config(
        tmp_path / "fleet.yaml",
        kafka.bootstrap,
        topics,
        f"sqlite://{tmp_path}/fleet.db",
        heartbeat_interval=f"{HEARTBEAT_S}s",
    )
    view = FleetProcess(fleet_config, tmp_path / "fleet.log").start()
    running: dict[str, Gateway] = {}
    for name in ("a", "b", "c"):
        folder = tmp_path / name
        folder.mkdir()
        port = free_port()
        config = gateway_config(
            folder,
            (broker.host, broker.port),
            http_port=port,
            include=[DEMO_RULES],
            kafka=kafka,
            topics=topics,
        )
        config["gateway"]["id"] = f"home-{name}"
        config["bridge"]["kafka"]["heartbeat_interval"] = f"{HEARTBEAT_S}s"
        running[f"home-{name}"] = gateways(write_config(folder / "edgegw.yaml", config), port).start()

    count, rate = 400, 400.0
    summary = simulate(broker, count=count, rate=rate)
    assert summary["acked"] == count, summary
    expected = expected_readings(count, rate=rate)  # every gateway subscribes to the whole simulated fleet

    def readings() -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for d in view.get("/api/devices"):
            out.setdefault(d["gateway_id"], {})[d["device_id"]] = d["readings"]
        return out

    until(
        lambda: readings() == {gw: dict(expected) for gw in running}, "every reading in the view", timeout=60
    )
    for device in view.get("/api/devices?gateway=home-a"):
        assert device["metrics"], device  # a last value for every device
    _, fires = independent_counts(kafka.bootstrap, topics)
    assert fires, "the demo rules fire on the simulated stream"
    for gw in running:
        detail = view.get(f"/api/gateways/{gw}")
        assert {r["rule_id"]: r["fires"] for r in detail["rules"] if r["fires"]} == {
            rule: n for (g, rule), n in fires.items() if g == gw
        }
        assert detail["commands"], "the demo rules drive actuators"
        assert all(c["outcome"] == "sent" for c in detail["commands"])
        assert detail["online"] is True

    # bad input, as each gateway counted it (its /metrics), reaches the view with its heartbeats
    publish(broker, [("zigbee2mqtt/temp-01", "not a Zigbee2MQTT object")])

    def bad_input_by_gateway() -> dict[str, dict[str, int]]:
        return {gw: {d["device_id"]: d["bad_input"] for d in view.get(f"/api/devices?gateway={gw}")
                     if d["bad_input"]} for gw in running}  # fmt: skip

    def counted_by_gateways() -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for gw, gateway in running.items():
            for (name, labels), n in gateway.metrics().items():
                if name == "edgegw_parse_errors_total" and n:
                    device = dict(labels)["device"]
                    out.setdefault(gw, {})[device] = out.get(gw, {}).get(device, 0) + int(n)
        return out

    until(lambda: "temp-01" in counted_by_gateways().get("home-a", {}), "the bad input counted", timeout=15)
    until(lambda: bad_input_by_gateway() == counted_by_gateways(), "bad input in the view", timeout=15)

    # stop one gateway: offline within 3 heartbeat intervals, timed by its last heartbeat
    running["home-b"].terminate()
    until(
        lambda: not view.get("/api/gateways/home-b")["online"], "home-b offline", timeout=3 * HEARTBEAT_S + 5
    )
    b = view.get("/api/gateways/home-b")
    assert b["since"] == pytest.approx(b["last_heartbeat"] + 3 * HEARTBEAT_S)
    assert [g["online"] for g in view.get("/api/gateways")] == [True, False, True]
    running["home-b"].start()
    until(lambda: view.get("/api/gateways/home-b")["online"], "home-b online again", timeout=30)
    events = [(e["online"], e["reason"]) for e in view.get("/api/gateways/home-b")["events"]]
    assert events[:3] == [(True, "heartbeat"), (False, "no heartbeat"), (True, "first heartbeat")]
    assert view.stop() == 0
