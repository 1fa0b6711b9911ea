"""Short chaos runs against the real gateway (``edgegw run`` as a subprocess), in CI.

The same scenario code as ``make chaos`` (bench/chaoslib.py), with small counts: every
reading the broker acknowledged to the publisher (QoS 1) is in Kafka (read_committed)
exactly once, whatever was killed or stopped on the way. The long runs (50 kills in
500k readings, a 10-minute outage, disk full, failover, 50 serial unplugs) stay in
``make chaos`` (``python -m bench.chaos``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.chaoslib import (
    ChaosResult,
    Run,
    scenario_broker_restart,
    scenario_kafka_outage,
    scenario_sigkill,
)
from simulators.testbed import KafkaEndpoint, KafkaNode, Mosquitto

pytestmark = [pytest.mark.mqtt, pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.fixture
def broker(mosquitto_workdir: Path) -> Iterator[Mosquitto]:
    """A Mosquitto of this test alone (it may be restarted)."""
    broker = Mosquitto(mosquitto_workdir)
    broker.start()
    yield broker
    broker.stop()


def _check(result: ChaosResult) -> None:
    print(result.summary())
    for note in result.notes:
        print(f"  note: {note}")
    assert result.acked > 0
    assert result.lost == 0, f"{result.summary()}; first lost {result.lost_examples}"
    # a reading the publisher sent again after its own connection dropped (QoS 1 with DUP)
    # reaches the gateway as a new message; every other copy is the gateway's fault
    assert result.duplicated == result.resent, f"{result.summary()}; first duplicated {result.dup_examples}"
    assert result.dup_ce_ids == 0, result.summary()
    assert result.in_kafka == result.acked


def test_five_sigkills_during_20k_readings(broker: Mosquitto, kafka: KafkaEndpoint, tmp_path: Path) -> None:
    run = Run(tmp_path / "run", broker, kafka)
    _check(scenario_sigkill(run, readings=20_000, kills=5, rate=2000.0, seed=5))


def test_kafka_outage_of_15_seconds_under_load(
    broker: Mosquitto, kafka_node: KafkaNode, tmp_path: Path
) -> None:
    run = Run(tmp_path / "run", broker, kafka_node)
    _check(scenario_kafka_outage(run, kafka_node, readings=25_000, rate=1000.0, outage=15.0))


def test_mosquitto_clean_restart_mid_run(broker: Mosquitto, kafka: KafkaEndpoint, tmp_path: Path) -> None:
    run = Run(tmp_path / "run", broker, kafka)
    _check(scenario_broker_restart(run, readings=20_000, rate=2000.0, restarts=1, kill=False))
