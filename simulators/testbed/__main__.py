"""Run the test bed's brokers by hand: ``python -m simulators.testbed COMMAND``.

fetch-kafka   fetch Kafka's jars from Maven Central into the cache (once) and print the folder
mosquitto     run a test Mosquitto in the foreground until Ctrl-C
kafka         run a single-node KRaft Kafka in the foreground until Ctrl-C
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import time
from pathlib import Path

from gateway.errors import TestBedError
from simulators.testbed.kafka import KafkaNode, ensure_kafka_jars, java_problem, kafka_version
from simulators.testbed.mosquitto import Mosquitto


def _wait_forever() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m simulators.testbed",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=["fetch-kafka", "mosquitto", "kafka"])
    parser.add_argument("--dir", type=Path, help="working directory (default: a new temporary one)")
    args = parser.parse_args(argv)
    workdir = args.dir or Path(tempfile.mkdtemp(prefix=f"edgegw-{args.command}-"))
    try:
        if args.command == "fetch-kafka":
            problem = java_problem()
            if problem is not None:
                print(f"error: {problem}", file=sys.stderr)
                return 1
            start = time.monotonic()
            folder = ensure_kafka_jars(quiet=True)
            jars = len(list(folder.glob("*.jar")))
            print(f"kafka {kafka_version()}: {jars} jars in {folder} ({time.monotonic() - start:.1f} s)")
        elif args.command == "mosquitto":
            with Mosquitto(workdir) as broker:
                print(
                    f"mosquitto on {broker.host}:{broker.port}, config {broker.config_path}; Ctrl-C stops it"
                )
                _wait_forever()
        else:
            with KafkaNode(workdir) as node:
                print(
                    f"kafka {kafka_version()} on {node.bootstrap}, data in {node.data_dir}; Ctrl-C stops it"
                )
                _wait_forever()
    except TestBedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
