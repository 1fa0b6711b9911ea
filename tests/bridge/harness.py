"""A small bridge process for the crash tests: spool generated readings and forward them.

    python -m tests.bridge.harness --spool PATH --bootstrap HOST:PORT --prefix P --total N

Reading number ``i`` goes to device ``dev-(i % devices)`` with value ``i``. The next number
to spool comes from the spool file itself (its sequence counter, committed with the rows),
so a process killed at any moment and started again continues where the disk says, and
the test can demand that Kafka holds 0..N-1 exactly once. Prints ``drained`` when every
reading is spooled and the spool is empty, then exits.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bridge.config import KafkaConfig, SpoolConfig
from bridge.forwarder import Forwarder
from bridge.policy import lane_priorities
from bridge.spool import Spool
from simulators.fleet_feed import topics_for
from tests.bridge.helpers import readings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spool", type=Path, required=True)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--total", type=int, required=True)
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--rate", type=float, default=10_000.0, help="readings per second")
    args = parser.parse_args(argv)

    topics = topics_for(args.prefix)
    spool = Spool.open(SpoolConfig(path=args.spool), lanes=lane_priorities(topics.of_kind()))
    kafka = KafkaConfig(
        bootstrap=args.bootstrap, topics=topics, batch_rows=1000, backoff_initial=0.1, backoff_max=1.0,
        send_timeout=10.0, heartbeat_interval=3600,
    )  # fmt: skip
    forwarder = Forwarder.for_kafka(spool, kafka, gateway_id="crash-gw")
    forwarder.start()
    index = spool._store.next_seq - 1  # readings ever committed to this spool
    started = time.monotonic()
    first = index
    while index < args.total:
        n = min(args.batch, args.total - index)
        spool.append_many(readings(n, devices=args.devices, start=index, ts=time.time()))
        index += n
        due = started + (index - first) / args.rate
        time.sleep(max(0.0, due - time.monotonic()))
    while spool.stats().depth > 0:
        time.sleep(0.05)
    print("drained", flush=True)
    forwarder.stop()
    spool.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
