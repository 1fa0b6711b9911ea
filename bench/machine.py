"""What every benchmark report shares: the machine and versions lines it starts with, and
where it is written (``bench/results/<name>-<date><suffix>.md``)."""

from __future__ import annotations

import contextlib
import os
import platform
import re
import subprocess
import time
from pathlib import Path

import confluent_kafka
import paho.mqtt

from simulators.testbed import find_mosquitto
from simulators.testbed.kafka import kafka_version

__all__ = ["RESULTS", "ROOT", "git_rev", "machine_lines", "write_result"]

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def git_rev() -> str:
    """The short commit of the tree the benchmark ran on, or '?'."""
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                         check=False, cwd=ROOT).stdout  # fmt: skip
    return out.strip() or "?"


def machine_lines() -> list[str]:
    """``- machine: ...`` and ``- versions: ...`` (CPU, RAM, Python, paho, librdkafka, Kafka, Mosquitto)."""
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram = "?"
    with contextlib.suppress(OSError, IndexError):
        kb = int(Path("/proc/meminfo").read_text().splitlines()[0].split()[1])
        ram = f"{kb / 1024 / 1024:.1f} GiB"
    binary = find_mosquitto()
    mosq = "?"
    if binary:
        out = subprocess.run([binary, "-h"], capture_output=True, text=True, check=False).stdout
        match = re.search(r"version (\S+)", out)
        mosq = match.group(1) if match else "?"
    return [
        f"- machine: {os.cpu_count()} CPUs ({cpu}), {ram} RAM, {platform.platform()}",
        f"- versions: Python {platform.python_version()}, paho-mqtt {paho.mqtt.__version__}, "
        f"confluent-kafka {confluent_kafka.__version__}, librdkafka {confluent_kafka.libversion()[0]}, "
        f"Kafka {kafka_version()}, Mosquitto {mosq}",
    ]


def write_result(name: str, text: str, suffix: str = "") -> Path:
    """Write a report to ``bench/results/<name>-<UTC date><suffix>.md`` and say so."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{name}-{time.strftime('%Y-%m-%d', time.gmtime())}{suffix}.md"
    out.write_text(text)
    print(f"written to {out.relative_to(ROOT)}")
    return out
