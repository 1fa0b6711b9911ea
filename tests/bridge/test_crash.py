"""SIGKILL the bridge at random moments, again and again: every reading committed to the
spool is in Kafka exactly once (read_committed), in order per device."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from simulators.fleet_feed import topics_for
from simulators.testbed import KafkaEndpoint
from tests.bridge.helpers import header, read_topic

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def _harness(spool: Path, bootstrap: str, prefix: str, total: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.bridge.harness", "--spool", str(spool), "--bootstrap", bootstrap,
         "--prefix", prefix, "--total", str(total)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip


def _crash_run(kafka: KafkaEndpoint, prefix: str, tmp_path: Path, total: int, kills: int, seed: int) -> None:
    topics = topics_for(prefix)
    kafka.create_topic(topics.readings, partitions=2)
    spool = tmp_path / "spool.db"
    rng = random.Random(seed)
    for _ in range(kills):
        proc = _harness(spool, kafka.bootstrap, prefix, total)
        time.sleep(rng.uniform(1.0, 4.0))  # start-up, spooling, transactions in flight...
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        assert proc.stdout is not None
        proc.stdout.close()
    proc = _harness(spool, kafka.bootstrap, prefix, total)
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0
    assert "drained" in out

    got = read_topic(kafka.bootstrap, topics.readings, total, partitions=(0, 1), timeout=120)
    values = sorted(int(json.loads(m.value())["value"]) for m in got)
    missing = sorted(set(range(total)) - set(values))
    assert not missing, f"{len(missing)} lost, first {missing[:5]}"
    assert len(values) == total, f"{len(values) - total} duplicates"
    assert len({header(m, "ce_id") for m in got}) == total
    per_device: dict[str, list[float]] = {}
    for m in got:
        data = json.loads(m.value())
        per_device.setdefault(data["device_id"], []).append(data["value"])
    for device, vals in per_device.items():
        assert vals == sorted(vals), f"{device} out of order"


def test_sigkill_five_times_nothing_lost_nothing_doubled(
    kafka: KafkaEndpoint, topic_prefix: str, tmp_path: Path
) -> None:
    _crash_run(kafka, topic_prefix, tmp_path, total=30_000, kills=5, seed=5)


@pytest.mark.chaos
def test_sigkill_ten_times_during_100k_readings(
    kafka: KafkaEndpoint, topic_prefix: str, tmp_path: Path
) -> None:
    _crash_run(kafka, topic_prefix, tmp_path, total=100_000, kills=10, seed=10)
