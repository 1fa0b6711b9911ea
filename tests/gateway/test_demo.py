"""`edgegw demo --duration` runs the simulated home through the real gateway and exits 0."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from simulators.testbed import KafkaEndpoint

pytestmark = [pytest.mark.mqtt, pytest.mark.kafka, pytest.mark.slow]


def _count(summary: str, label: str) -> int:
    match = re.search(rf"{label}\s*│\s*(\d+)", summary)
    assert match is not None, f"no {label!r} in the summary:\n{summary}"
    return int(match.group(1))


def test_demo_runs_20_s_and_summarises(kafka: KafkaEndpoint, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "demo", "--duration", "20", "--no-view",
         "--kafka", kafka.bootstrap, "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=120, check=False,
        env={"COLUMNS": "120", "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"},
    )  # fmt: skip
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "edgegw demo summary" in out
    sent = _count(out, "simulated readings sent")
    received = _count(out, "readings received")
    assert sent > 300  # 40 readings/s for ~20 s
    assert received == sent
    assert _count(out, "rule fires") >= 1
    assert _count(out, "commands sent") >= 1
    assert _count(out, "commands confirmed") >= 1
    assert _count(out, "kafka events shipped") >= received
    assert (tmp_path / "state" / "spool.db").exists()
    with sqlite3.connect(tmp_path / "state" / "spool.db") as db:  # the rule state commits with the readings
        assert db.execute("SELECT count(*) FROM rule_state WHERE key LIKE 'rule:%'").fetchone()[0] >= 1
