"""The Kafka uplink in a process of its own (bridge/uplink.py), with `edgegw run`, the real
Mosquitto and the real Kafka:

- the uplink process SIGKILLed under load is started again (``restarts`` in /metrics goes
  up, a new pid), /healthz stays 200 meanwhile (local automation works) and shows the
  uplink's state, and a read_committed consumer sees every reading exactly once;
- SIGTERM with rows in the spool: the uplink process ships them and exits before
  ``edgegw run`` does; everything the gateway took is in Kafka without another start;
- the uplink process SIGTERMed alone exits 0 and is started again; ``edgegw run``
  SIGKILLed: its uplink process exits by itself (no orphan);
- the main process never loads librdkafka; the uplink process does;
- the uplink process SIGSTOPped (frozen) is killed and started again, and readings still
  reach Kafka exactly once; SIGTERM to the gateway while it is frozen ends the gateway;
- the uplink process runs the gateway's code whatever the cwd holds, without the
  environment variables the config's secrets name; its supervisor outlives a bug.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs

from bridge.config import (
    KafkaConfig,
    KafkaSecrets,
    KafkaSecurity,
    SaslConfig,
    SecretRef,
    SpoolConfig,
    TopicsConfig,
)
from bridge.policy import lane_priorities
from bridge.spool import Spool
from bridge.uplink import SEND_TIMEOUT_S, SILENT_S, UplinkProcess
from simulators.testbed import KafkaEndpoint, Mosquitto
from simulators.testbed._process import free_port
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


def _start(
    broker: Mosquitto, kafka: KafkaEndpoint, topic_prefix: str, tmp_path: Path, http_port: int,
    gateways: MakeGateway, *, linger: str | None = None,
) -> tuple[TopicsConfig, Gateway, int]:  # fmt: skip
    """``edgegw run`` with the demo rules and the Kafka uplink, once its uplink process is up
    (its pid, from /metrics, last)."""
    topics = kafka_topics(kafka, topic_prefix)
    config = gateway_config(tmp_path, (broker.host, broker.port), http_port=http_port, include=[DEMO_RULES],
                            kafka=kafka, topics=topics)  # fmt: skip
    if linger is not None:
        config["bridge"]["kafka"]["linger"] = linger
    gateway = gateways(write_config(tmp_path / "edgegw.yaml", config), http_port).start()
    _until(lambda: _uplink_pid(gateway) is not None, "the uplink process in /metrics")
    pid = _uplink_pid(gateway)
    assert pid is not None
    return topics, gateway, pid


def _exactly_once_in_kafka(kafka: KafkaEndpoint, topics: TopicsConfig, count: int, rate: float,
                           timeout: float = 120.0) -> None:  # fmt: skip
    """A read_committed consumer finds every reading the fleet sent, each once."""
    expected = expected_readings(count, rate=rate)
    total = sum(expected.values())
    records = read_kafka(kafka.bootstrap, [topics.readings], until=lambda rs: len(rs) >= total,
                         timeout=timeout)  # fmt: skip
    ids = Counter(r.headers["ce_id"] for r in records)
    assert [i for i, n in ids.items() if n > 1] == [], "a record reached Kafka twice"
    assert readings_by_device(records, topics.readings) == expected


@dataclass
class _Fleet:
    process: subprocess.Popen[str]
    summary: dict[str, Any] = field(default_factory=dict)


@contextlib.contextmanager
def _fleet(broker: Mosquitto, count: int, rate: float) -> Iterator[_Fleet]:
    """A simulated fleet publishing in the background; on leaving, it has ended (killed on
    an error) and ``summary`` holds its last line."""
    process = subprocess.Popen(
        simulate_command(broker, count=count, rate=rate),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    fleet = _Fleet(process)
    try:
        yield fleet
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=10)
    assert process.returncode == 0, err
    fleet.summary = json.loads(out.strip().splitlines()[-1])


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
    topics, gateway, first = _start(broker, kafka, topic_prefix, tmp_path, http_port, gateways)
    assert gateway.process is not None
    assert first != gateway.process.pid
    assert "librdkafka" not in _maps(gateway.process.pid), "the main process loaded librdkafka"
    _until(lambda: "librdkafka" in _maps(first), "librdkafka in the uplink process")
    assert (_metric(gateway, "edgegw_uplink_process_resident_memory_bytes") or 0) > 0

    count, rate = 8000, 2000.0
    with _fleet(broker, count, rate) as fleet:
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
    assert fleet.summary["acked"] == count, fleet.summary

    _exactly_once_in_kafka(kafka, topics, count, rate)
    assert gateway.wait_log("uplink process ended; restarting")["how"] == "signal SIGKILL"
    code, _took = gateway.terminate()
    assert code == 0


@pytest.mark.mqtt
@pytest.mark.kafka
def test_sigterm_drains_the_spool_through_the_uplink_process_before_the_gateway_exits(
    broker: Mosquitto, kafka: KafkaEndpoint, topic_prefix: str, tmp_path: Path, http_port: int,
    gateways: MakeGateway,
) -> None:  # fmt: skip
    # rows wait in the spool between rounds
    topics, gateway, child = _start(broker, kafka, topic_prefix, tmp_path, http_port, gateways, linger="10s")
    up = ("edgegw_uplink_state", (("state", "up"),))
    _until(lambda: gateway.metrics().get(up) == 1, "the uplink up (its first round, a heartbeat, shipped)")

    count, rate = 2000, 2000.0
    summary = simulate(broker, count=count, rate=rate)
    assert summary["acked"] == count
    total = sum(expected_readings(count, rate=rate).values())
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

    _exactly_once_in_kafka(kafka, topics, count, rate, timeout=60)  # without another start


@pytest.mark.mqtt
@pytest.mark.kafka
def test_the_uplink_process_exits_when_the_gateway_is_killed(
    broker: Mosquitto, kafka: KafkaEndpoint, topic_prefix: str, tmp_path: Path, http_port: int,
    gateways: MakeGateway,
) -> None:  # fmt: skip
    _topics, gateway, first = _start(broker, kafka, topic_prefix, tmp_path, http_port, gateways)
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


def test_the_uplink_process_runs_our_code_without_the_secret_env_whatever_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``edgegw run`` started in a directory holding a ``bridge`` package: the uplink process
    still runs the gateway's own (``python -P``, PYTHONPATH), and its environment lacks the
    variables the config's ``env:`` secrets name (it gets the secrets on its socket)."""
    decoy = tmp_path / "bridge"
    decoy.mkdir()
    (decoy / "__init__.py").write_text("")
    marker = tmp_path / "decoy-ran"
    (decoy / "uplink_process.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EDGEGW_TEST_UPLINK_PW", "kafka-secret")
    monkeypatch.setenv("EDGEGW_TEST_MQTT_PW", "mqtt-secret")
    sasl = SaslConfig(username="gw", password=SecretRef(env="EDGEGW_TEST_UPLINK_PW"))
    kafka = KafkaConfig(bootstrap=f"127.0.0.1:{free_port()}",  # nobody there: it need not ship
                        security=KafkaSecurity(protocol="SASL_PLAINTEXT", sasl=sasl))  # fmt: skip
    spool = Spool.open(SpoolConfig(path=tmp_path / "spool.db"), lanes=lane_priorities(kafka.topics.of_kind()))
    secrets = KafkaSecrets(sasl_password=SecretStr("pw"))
    uplink = UplinkProcess(spool, kafka, gateway_id="gw-cwd", secrets=secrets,
                           hidden_env={"EDGEGW_TEST_MQTT_PW"})  # fmt: skip
    try:
        uplink.start()
        # the real child reports its figures; the decoy would only leave its marker
        _until(lambda: marker.exists() or uplink.stats().state not in ("starting", "restarting"),
               "figures from the uplink process")  # fmt: skip
        assert not marker.exists(), "the uplink process ran the cwd's bridge package"
        pid = uplink.process().pid
        assert pid is not None
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        environ = dict(
            item.split("=", 1) for item in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in item
        )
    finally:
        uplink.stop(0.5)
        spool.close()
    assert "EDGEGW_TEST_UPLINK_PW" not in environ
    assert "EDGEGW_TEST_MQTT_PW" not in environ
    assert environ["PYTHONPATH"].split(os.pathsep)[0] == str(ROOT.resolve())
    assert argv[1:3] == [b"-P", b"-m"], argv


@pytest.mark.mqtt
@pytest.mark.kafka
def test_a_frozen_uplink_process_is_killed_and_restarted_and_does_not_hold_up_the_stop(
    broker: Mosquitto, kafka: KafkaEndpoint, topic_prefix: str, tmp_path: Path, http_port: int,
    gateways: MakeGateway,
) -> None:  # fmt: skip
    topics, gateway, first = _start(broker, kafka, topic_prefix, tmp_path, http_port, gateways)

    count, rate = 4000, 500.0
    with _fleet(broker, count, rate) as fleet:
        _until(lambda: (_metric(gateway, "edgegw_forwarder_sent_total") or 0) > 0, "records shipped")
        os.kill(first, signal.SIGSTOP)  # frozen: alive, silent, reading nothing
        window = SILENT_S + 60.0
        _until(lambda: _uplink_pid(gateway) not in (None, first), "a new uplink process", timeout=window)
        assert not _alive(first)
        # under load the gateway's messages fill the socket first (its send times out);
        # idle (below), only the silence tells
        killed = gateway.wait_log("uplink process unresponsive; killing it")
        assert killed["pid"] == first
        assert killed["reason"] in (
            f"killed: silent for {SILENT_S:g} s",
            f"killed: not reading for {SEND_TIMEOUT_S} s",
        )
        process = gateway.healthz()[1]["components"]["uplink"]["process"]
        assert process["restarts"] >= 1
        assert process["last_exit"] == killed["reason"]
    assert fleet.summary["acked"] == count, fleet.summary

    _exactly_once_in_kafka(kafka, topics, count, rate)

    second = _uplink_pid(gateway)
    assert second is not None
    up = ("edgegw_uplink_state", (("state", "up"),))
    _until(lambda: gateway.metrics().get(up) == 1, "the new uplink process up")
    mark = len(gateway.logs)
    os.kill(second, signal.SIGSTOP)  # idle now: only its silence tells
    _until(lambda: _uplink_pid(gateway) not in (None, second), "a third uplink process", timeout=window)
    killed = gateway.wait_log("uplink process unresponsive; killing it", after=mark)
    assert (killed["pid"], killed["reason"]) == (second, f"killed: silent for {SILENT_S:g} s")
    assert gateway.healthz()[1]["components"]["uplink"]["process"]["last_exit"] == killed["reason"]

    third = _uplink_pid(gateway)
    assert third is not None
    _until(lambda: gateway.metrics().get(up) == 1, "the third uplink process up")
    os.kill(third, signal.SIGSTOP)
    mark = len(gateway.logs)
    code, _took = gateway.terminate(timeout=60)
    assert code == 0
    assert not _alive(third)
    events = [str(e.get("event")) for e in gateway.logs[mark:]]
    assert "uplink process did not stop in time; killed" in events, events


def test_the_supervisor_outlives_an_unexpected_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug in the supervisor thread (here: the first spawn raises) is logged with its
    traceback, and the uplink process is started all the same."""
    kafka = KafkaConfig(bootstrap=f"127.0.0.1:{free_port()}")  # nobody there: it need not ship
    spool = Spool.open(SpoolConfig(path=tmp_path / "spool.db"), lanes=lane_priorities(kafka.topics.of_kind()))
    uplink = UplinkProcess(spool, kafka, gateway_id="gw-bug")
    spawn = uplink._spawn
    calls: list[int] = []

    def buggy() -> object:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a bug")
        return spawn()

    monkeypatch.setattr(uplink, "_spawn", buggy)
    try:
        with capture_logs() as logs:
            uplink.start()
            _until(lambda: uplink.stats().state not in ("starting", "restarting"), "figures from the child")
    finally:
        uplink.stop(0.5)
        spool.close()
    failed = [e for e in logs if e["event"].startswith("uplink supervisor failed unexpectedly")]
    assert failed, logs
    assert failed[0]["log_level"] == "error"
    assert failed[0].get("exc_info"), failed[0]
