"""The Kafka uplink in a process of its own (bridge/uplink.py), with `edgegw run`, the real
Mosquitto and the real Kafka:

- the uplink process SIGKILLed under load is started again (``restarts`` in /metrics goes
  up, a new pid), /healthz stays 200 meanwhile (local automation works) and shows the
  uplink's state, and a read_committed consumer sees every reading exactly once;
- SIGTERM with rows in the spool: the uplink process ships them and exits before
  ``edgegw run`` does; everything the gateway took is in Kafka without another start;
- the uplink process SIGTERMed alone exits 0 and is started again; ``edgegw run``
  SIGKILLed: its uplink process exits by itself (no orphan);
- the main process never loads librdkafka; the uplink process does.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from simulators.testbed import KafkaEndpoint, Mosquitto
from tests.gateway.conftest import (
    DEMO_RULES,
    ROOT,
    Gateway,
    expected_readings,
    gateway_config,
    kafka_topics,
    read_kafka,
    readings_by_device,
    simulate,
    simulate_command,
    write_config,
)

MakeGateway = Callable[[Path, int], Gateway]


def _until(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.05)


def _metric(gateway: Gateway, name: str) -> float | None:
    return gateway.metrics().get((name, ()))


def _uplink_pid(gateway: Gateway) -> int | None:
    pid = _metric(gateway, "edgegw_uplink_process_pid")
    return None if pid is None else int(pid)


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its parent counts as gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("State:"):
                    return "Z" not in line.split()[1]
    except OSError:
        return False
    return False


def _maps(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def _no_duplicates(records: list) -> None:  # type: ignore[type-arg]
    ids = Counter(r.headers["ce_id"] for r in records)
    assert [i for i, n in ids.items() if n > 1] == [], "a record reached Kafka twice"


def test_the_main_process_path_imports_no_kafka_client() -> None:
    """What ``edgegw run`` imports to run with a Kafka uplink: confluent_kafka stays out."""
    code = (
        "import sys, gateway.cli, gateway.commands.run, gateway.runtime, gateway.assembly, gateway.metrics, "
        "gateway.http, gateway.status.page, bridge, bridge.uplink; "
        "print(sorted(m for m in sys.modules if m.startswith(('confluent_kafka', 'bridge.kafka', "
        "'bridge.checkpoint', 'bridge.uplink_process'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "['bridge.uplink_process']"


@pytest.mark.mqtt
@pytest.mark.kafka
def test_the_uplink_process_killed_under_load_is_restarted_and_nothing_is_lost_or_doubled(
    broker: Mosquitto, kafka: KafkaEndpoint, topic_prefix: str, tmp_path: Path, http_port: int,
    gateways: MakeGateway,
) -> None:  # fmt: skip
    topics = kafka_topics(kafka, topic_prefix)
    config = gateway_config(tmp_path, (broker.host, broker.port), http_port=http_port, include=[DEMO_RULES],
                            kafka=kafka, topics=topics)  # fmt: skip
    gateway = gateways(write_config(tmp_path / "edgegw.yaml", config), http_port).start()
    assert gateway.process is not None
    _until(lambda: _uplink_pid(gateway) is not None, "the uplink process in /metrics")
    first = _uplink_pid(gateway)
    assert first is not None
    assert first != gateway.process.pid
    assert "librdkafka" not in _maps(gateway.process.pid), "the main process loaded librdkafka"
    _until(lambda: "librdkafka" in _maps(first), "librdkafka in the uplink process")
    assert (_metric(gateway, "edgegw_uplink_process_resident_memory_bytes") or 0) > 0

    count, rate = 8000, 2000.0
    fleet = subprocess.Popen(
        simulate_command(broker, count=count, rate=rate),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    try:
        _until(lambda: (_metric(gateway, "edgegw_forwarder_sent_total") or 0) > 0, "records shipped")
        os.kill(first, signal.SIGKILL)
        status, health = gateway.healthz()
        assert status == 200, health  # the uplink away: local automation goes on
        assert "process" in health["components"]["uplink"]
        _until(lambda: (_metric(gateway, "edgegw_uplink_process_restarts_total") or 0) >= 1, "a restart")
        _until(lambda: _uplink_pid(gateway) not in (None, first), "a new uplink process")
        status, health = gateway.healthz()
        assert status == 200, health
        process = health["components"]["uplink"]["process"]
        assert process["restarts"] >= 1
        assert process["last_exit"] == "signal SIGKILL"
        out, err = fleet.communicate(timeout=120)
    finally:
        if fleet.poll() is None:
            fleet.kill()
            fleet.communicate(timeout=10)
    assert fleet.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["acked"] == count, summary

    expected = expected_readings(count, rate=rate)
    total = sum(expected.values())
    records = read_kafka(kafka.bootstrap, [topics.readings], until=lambda rs: len(rs) >= total, timeout=120)
    _no_duplicates(records)
    assert readings_by_device(records, topics.readings) == expected
    assert gateway.wait_log("uplink process ended; restarting")["how"] == "signal SIGKILL"
    code, _took = gateway.terminate()
    assert code == 0


@pytest.mark.mqtt
@pytest.mark.kafka
def test_sigterm_drains_the_spool_through_the_uplink_process_before_the_gateway_exits(
    broker: Mosquitto, kafka: KafkaEndpoint, topic_prefix: str, tmp_path: Path, http_port: int,
    gateways: MakeGateway,
) -> None:  # fmt: skip
    topics = kafka_topics(kafka, topic_prefix)
    config = gateway_config(tmp_path, (broker.host, broker.port), http_port=http_port, include=[DEMO_RULES],
                            kafka=kafka, topics=topics)  # fmt: skip
    config["bridge"]["kafka"]["linger"] = "10s"  # rows wait in the spool between rounds
    gateway = gateways(write_config(tmp_path / "edgegw.yaml", config), http_port).start()
    _until(lambda: _uplink_pid(gateway) is not None, "the uplink process in /metrics")
    child = _uplink_pid(gateway)
    assert child is not None
    up = ("edgegw_uplink_state", (("state", "up"),))
    _until(lambda: gateway.metrics().get(up) == 1, "the uplink up (its first round, a heartbeat, shipped)")

    count, rate = 2000, 2000.0
    summary = simulate(broker, count=count, rate=rate)
    assert summary["acked"] == count
    expected = expected_readings(count, rate=rate)
    total = sum(expected.values())
    _until(lambda: gateway.readings_seen() >= total, "every reading taken")
    depth = _metric(gateway, "edgegw_spool_depth")
    assert depth is not None
    assert depth > 0, "nothing waited in the spool: the test proves nothing"

    mark = len(gateway.logs)
    code, _took = gateway.terminate()
    assert code == 0
    assert not _alive(child)
    events = [str(e.get("event")) for e in gateway.logs[mark:]]
    assert "uplink process stopped" in events, events
    assert events.index("uplink process stopped") < events.index("stopped"), events
    assert not any(e.startswith("rows left in the spool") for e in events), events

    records = read_kafka(kafka.bootstrap, [topics.readings], until=lambda rs: len(rs) >= total, timeout=60)
    _no_duplicates(records)
    assert readings_by_device(records, topics.readings) == expected  # without another start


@pytest.mark.mqtt
@pytest.mark.kafka
def test_the_uplink_process_exits_when_the_gateway_is_killed(
    broker: Mosquitto, kafka: KafkaEndpoint, topic_prefix: str, tmp_path: Path, http_port: int,
    gateways: MakeGateway,
) -> None:  # fmt: skip
    topics = kafka_topics(kafka, topic_prefix)
    config = gateway_config(tmp_path, (broker.host, broker.port), http_port=http_port, include=[DEMO_RULES],
                            kafka=kafka, topics=topics)  # fmt: skip
    gateway = gateways(write_config(tmp_path / "edgegw.yaml", config), http_port).start()
    _until(lambda: _uplink_pid(gateway) is not None, "the uplink process in /metrics")
    first = _uplink_pid(gateway)
    assert first is not None
    up = ("edgegw_uplink_state", (("state", "up"),))
    _until(lambda: gateway.metrics().get(up) == 1, "the uplink up (its signal handling set up)")
    os.kill(first, signal.SIGTERM)  # to the child alone: it stops, and the gateway starts another
    _until(lambda: _uplink_pid(gateway) not in (None, first), "a new uplink process after SIGTERM")
    assert not _alive(first)
    assert gateway.healthz()[1]["components"]["uplink"]["process"]["last_exit"] == "exit 0"
    child = _uplink_pid(gateway)
    assert child is not None
    assert _alive(child)
    gateway.kill()
    _until(lambda: not _alive(child), "the orphaned uplink process to exit", timeout=15)
