"""How long the exactly-once uplink takes to connect: from nothing to its first batch.

    .venv/bin/python -m bench.uplink_start [--runs 7]

Starts a Kafka (KRaft, loopback) of the test bed, commits one checkpoint of this gateway
(as every run after the first finds one), then connects ``bridge.kafka.KafkaUplink`` of
this checkout ``--runs`` times, closing it in between, and prints the median time of
each step of ``connect()``: the transactional producer (``init_transactions``: fencing an
older incarnation), the checkpoint topic's check, and the read of the newest checkpoint
(``read_checkpoint``). The uplink ships nothing before all three are done, so after a
start (READY) the first record reaches Kafka no sooner. Nothing is asserted; the machine
is shared (figures indicative).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.brokers import start_brokers
from bridge import kafka
from bridge.checkpoint import Checkpoint
from bridge.config import KafkaConfig

_TIMED = (("checkpoint topic", "ensure_checkpoint_topic"), ("read_checkpoint", "read_checkpoint"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args(argv)
    steps: dict[str, list[float]] = {"init_transactions": [], "checkpoint topic": [], "read_checkpoint": [],
                                     "connect() in all": []}  # fmt: skip
    with contextlib.ExitStack() as stack:
        work = Path(tempfile.mkdtemp(prefix="edgegw-uplink-start-"))
        print("starting Kafka ...", flush=True)
        _, node = start_brokers(stack, work, kafka=True)
        assert node is not None
        topics = {k: f"start-{k}" for k in ("readings", "events", "commands", "heartbeats", "checkpoints")}
        config = KafkaConfig(bootstrap=node.bootstrap, topics=topics, mode="exactly_once")
        uplink = kafka.KafkaUplink(config, "bench-gw")
        uplink.connect()  # creates the checkpoint topic; commit one checkpoint into it
        uplink.send([], Checkpoint("bench-gw", "spool-1", {0: 10, 1: 20, 2: 30}))
        uplink.close()
        marks: dict[str, float] = {}
        real = {name: getattr(kafka, name) for name in ("ensure_checkpoint_topic", "read_checkpoint")}

        def timed(name: str) -> Callable[..., Any]:
            def call(*a: Any, **kw: Any) -> Any:
                marks[f"{name} start"] = time.monotonic()
                try:
                    return real[name](*a, **kw)
                finally:
                    marks[name] = time.monotonic()

            return call

        for name in real:
            setattr(kafka, name, timed(name))
        for _ in range(args.runs):
            uplink = kafka.KafkaUplink(config, "bench-gw")
            began = time.monotonic()
            found = uplink.connect()
            done = time.monotonic()
            uplink.close()
            assert found is not None, "the checkpoint committed above was not found"
            steps["init_transactions"].append(marks["ensure_checkpoint_topic start"] - began)
            for step, name in _TIMED:
                steps[step].append(marks[name] - marks[f"{name} start"])
            steps["connect() in all"].append(done - began)
    print(f"exactly-once uplink connect, {args.runs} runs, medians (min-max):")
    for name, values in steps.items():
        print(f"  {name:<20} {statistics.median(values) * 1000:7.0f} ms  "
              f"({min(values) * 1000:.0f}-{max(values) * 1000:.0f})")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
