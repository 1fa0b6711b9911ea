"""Forwarder figures: drain rate of a full spool to a local Kafka, exactly-once and at-least-once.

    .venv/bin/python -m bench.forwarder_bench               # 200k readings, 3 runs per mode
    .venv/bin/python -m bench.forwarder_bench --rows 500000 --batch-rows 10000

Starts a single-node Kafka from the test bed (simulators.testbed.KafkaNode), fills a spool
with readings (100 devices, 3 partitions), then starts the forwarder and times from its
first committed batch to the last (the connection, init_transactions and the checkpoint
read are reported apart). Also reports disk bytes written per event by this process
while draining (/proc/self/io: the spool's deletes). Prints medians; nothing is asserted.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from bench.spool_bench import _io_write_bytes, make_readings
from bridge.config import KafkaConfig, SpoolConfig, TopicsConfig
from bridge.forwarder import Forwarder
from bridge.policy import lane_priorities
from bridge.spool import Spool
from common.logs import configure_logging
from simulators.testbed import KafkaNode


def drain_run(
    node: KafkaNode, base: Path, mode: str, rows: int, batch_rows: int
) -> tuple[float, float, float]:
    """(events/s, seconds to connect, disk bytes per event while draining)."""
    prefix = f"bench-{uuid.uuid4().hex[:6]}"
    topics = TopicsConfig(readings=f"{prefix}.readings", events=f"{prefix}.events",
                          commands=f"{prefix}.commands", heartbeats=f"{prefix}.heartbeats",
                          checkpoints=f"{prefix}.checkpoints")  # fmt: skip
    node.create_topic(topics.readings, partitions=3)
    spool = Spool.open(
        SpoolConfig(path=base / f"{prefix}.db", max_bytes=8 << 30), lanes=lane_priorities(topics.of_kind())
    )
    items = make_readings(rows)
    for i in range(0, rows, 10_000):
        spool.append_many(items[i : i + 10_000], timeout=600)
    config = KafkaConfig(bootstrap=node.bootstrap, topics=topics, mode=mode, batch_rows=batch_rows)
    forwarder = Forwarder.for_kafka(spool, config, gateway_id=prefix)
    started = time.perf_counter()
    written = _io_write_bytes()
    forwarder.start()
    while forwarder.stats().shipped == 0:
        time.sleep(0.001)
    first_at = time.perf_counter()
    first = forwarder.stats().shipped
    while forwarder.stats().shipped < rows:
        time.sleep(0.005)
    done_at = time.perf_counter()
    spool.flush()
    per_event = (_io_write_bytes() - written) / rows
    forwarder.stop()
    spool.close()
    return (rows - first) / (done_at - first_at), first_at - started, per_event


def main() -> None:
    configure_logging(level="warning", json=False)
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch-rows", type=int, default=5000)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="edgegw-forwarder-bench-", dir=args.dir))
    node = KafkaNode(base / "kafka")
    try:
        node.start()
        print(f"forwarder drain: {args.rows} readings, batches of {args.batch_rows}, Kafka {node.bootstrap}")
        for mode in ("exactly_once", "at_least_once"):
            runs = [drain_run(node, base, mode, args.rows, args.batch_rows) for _ in range(args.runs)]
            rate = statistics.median(r[0] for r in runs)
            connect = statistics.median(r[1] for r in runs)
            disk = statistics.median(r[2] for r in runs)
            print(f"  {mode:<14} {rate:>10,.0f} events/s   (connect + checkpoint read {connect:.2f} s; "
                  f"spool deletes {disk:.0f} disk bytes/event)")  # fmt: skip
    finally:
        node.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
