"""The brokers a benchmark runs against: a test-bed Mosquitto and, when asked, a
single-node Kafka (KRaft), both stopped with the caller's exit stack."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from simulators.testbed import KafkaNode, Mosquitto

__all__ = ["start_brokers"]


def start_brokers(stack: contextlib.ExitStack, work: Path, *, kafka: bool = True, nodelay: bool = True,
                  lines: Sequence[str] = (),
                  **mosquitto: Any) -> tuple[Mosquitto, KafkaNode | None]:  # fmt: skip
    """Mosquitto under ``work/mqtt`` (``set_tcp_nodelay true`` unless ``nodelay`` is off: Debian's
    configuration leaves Nagle on; then ``lines``; ``mosquitto``: its keyword options), and
    Kafka under ``work/kafka`` when ``kafka``."""
    broker = Mosquitto(work / "mqtt", **mosquitto)
    extra = (["set_tcp_nodelay true"] if nodelay else []) + list(lines)
    if extra:
        with broker.config_path.open("a") as conf:
            conf.write("".join(f"{line}\n" for line in extra))
    stack.callback(broker.stop)
    broker.start()
    node = None
    if kafka:
        node = KafkaNode(work / "kafka")
        stack.callback(node.stop)
        node.start()
    return broker, node
