"""Deployments over a local Kafka: how long from ``edgegw deploy`` to the applied event,
and how long a gateway that was offline takes to converge after its start.

    .venv/bin/python -m bench.deploy_bench [--runs 10] [--settle 0s] [--no-write]

A real Mosquitto, a real single-node Kafka (KRaft) and ``edgegw run`` as a process, as in
the tests. Figures:

- ``deploy -> applied``: ``edgegw deploy FILE --gateway ID`` run as a command, from its
  start to its exit (it exits when it read the gateway's applied event from Kafka): the
  local check, reading the desired topic for the next version, the write, the gateway's
  validation and reload, the settle time (``--settle``, 0 s by default so that the figure
  is the machinery's; a real deployment adds its settle time, 30 s by default), the event
  through the spool and the transactional producer, and the CLI reading it back. Median
  of ``--runs``, with the minimum and maximum.
- ``offline convergence``: the gateway is stopped, a new version is written, and the
  gateway started again: the time from the process start to its applied event in Kafka
  (process start-up, reading the compacted topic to its end, validation, reload, settle,
  the event shipped). Median of 3.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.machine import git_rev, machine_lines, write_result
from simulators.fleet import FleetSpec
from simulators.testbed import KafkaNode, Mosquitto, free_port
from tests.bridge.conftest import make_topics
from tests.gateway.conftest import (
    DEMO_FLEET,
    ROOT,
    Gateway,
    KRecord,
    gateway_config,
    read_kafka,
    write_config,
)

RULE: dict[str, Any] = {
    "id": "heating",
    "when": {"sensor": "temp-01/temperature", "below": 18},
    "then": [{"set": "living-room/thermostat", "to": {"state": "heat"}}],
}
APPLIED = "edgegw.deployment.applied.v1"
APPLIED = "edgegw.deployment.applied.v1"
ACTUATORS = [{"id": "living-room/thermostat", "profile": "zigbee2mqtt", "name": "living-room-thermostat"}]


def _document(threshold: int) -> str:
    return json.dumps({"rules": [{**RULE, "when": {**RULE["when"], "below": threshold}}]})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--settle", default="0s")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="deploy-bench-") as tmp:
        work = Path(tmp)
        broker = Mosquitto(work / "mosquitto")
        broker.start()
        node = KafkaNode(work / "kafka")
        node.start()
        try:
            lines = _run(work, broker, node, args)
        finally:
            node.stop()
            broker.stop()
    text = "\n".join(
        ["# Deployments over Kafka", "", f"- commit: {git_rev()}", *machine_lines(), "", *lines, ""]
    )
    print("\n".join(lines))
    if not args.no_write:
        write_result("deploy", text)
    return 0


def _run(work: Path, broker: Mosquitto, node: KafkaNode, args: argparse.Namespace) -> list[str]:
    prefix = f"bench-{uuid.uuid4().hex[:6]}"
    topics = make_topics(node, prefix)
    desired = node.create_topic(f"{prefix}.desired", config={"cleanup.policy": "compact"})
    commands = node.create_topic(f"{prefix}.commands-in")
    port = free_port()
    devices = [d for d in FleetSpec.load(DEMO_FLEET).gateway_devices() if d["id"] == "temp-01"]
    config = gateway_config(
        work,
        (broker.host, broker.port),
        http_port=port,
        devices=devices,
        actuators=ACTUATORS,
        rules=[RULE],
        kafka=node,
        topics=topics,
    )
    config["cloud"] = {"desired_topic": desired, "commands_topic": commands, "settle": args.settle}
    gid = config["gateway"]["id"]
    path = write_config(work / "edgegw.yaml", config)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    gateway = Gateway(path, port, work).start()
    times: list[float] = []
    for run in range(args.runs):
        doc = work / f"doc-{run}.json"
        doc.write_text(_document(10 + run))
        began = time.monotonic()
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "gateway",
                "deploy",
                str(doc),
                "--gateway",
                gid,
                "--kafka",
                node.bootstrap,
                "--desired-topic",
                desired,
                "--events-topic",
                topics.events,
                "--timeout",
                "60",
            ],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        took = time.monotonic() - began
        if done.returncode != 0:
            raise SystemExit(f"deploy failed: {done.stdout}{done.stderr}")
        times.append(took)
        print(f"deploy {run + 1}: {took:.2f} s", file=sys.stderr)
    raw = _write_to_event(node.bootstrap, desired, topics.events, gid, args.runs)
    gateway.terminate()

    offline: list[float] = []
    version = 2 * args.runs
    for run in range(3):
        version += 1
        from bridge.central import produce  # noqa: PLC0415

        body = json.loads(_document(40 + run)) | {"version": version}
        produce({"bootstrap.servers": node.bootstrap}, desired, gid, json.dumps(body).encode())
        began = time.monotonic()
        gateway = Gateway(path, port, work).start()

        def applied(records: list[KRecord], want: int = version) -> bool:
            return any(r.headers.get("ce_type") == APPLIED and r.value.get("version") == want
                       for r in records)  # fmt: skip

        read_kafka(node.bootstrap, [topics.events], until=applied, timeout=120, settle=0.0, idle=120)
        offline.append(time.monotonic() - began)
        print(f"offline start {run + 1}: {offline[-1]:.2f} s", file=sys.stderr)
        gateway.terminate()
    return [
        f"- settle time configured: {args.settle} (the default is 30s; it adds to every figure below)",
        f"- deploy -> applied (`edgegw deploy` start to exit, {len(times)} runs): median "
        f"{statistics.median(times):.2f} s, min {min(times):.2f} s, max {max(times):.2f} s",
        f"- write -> applied event (the record written and the event read in-process, no CLI start-up, "
        f"{len(raw)} runs): median {statistics.median(raw):.2f} s, min {min(raw):.2f} s, "
        f"max {max(raw):.2f} s",
        f"- offline convergence (process start to applied event in Kafka, {len(offline)} runs): median "
        f"{statistics.median(offline):.2f} s, min {min(offline):.2f} s, max {max(offline):.2f} s",
    ]


def _write_to_event(bootstrap: str, desired: str, events: str, gid: str, runs: int) -> list[float]:
    from bridge.central import EventWatch, produce  # noqa: PLC0415

    conf = {"bootstrap.servers": bootstrap}
    out = []
    for run in range(runs):
        version = runs + 1 + run
        watch = EventWatch(conf, events)
        began = time.monotonic()
        produce(
            conf, desired, gid, json.dumps(json.loads(_document(20 + run)) | {"version": version}).encode()
        )
        seen = False
        while not seen and time.monotonic() - began < 60:
            seen = any(e.type == APPLIED and e.data.get("version") == version for e in watch.poll(0.05))
        watch.close()
        out.append(time.monotonic() - began)
        print(f"write -> event {run + 1}: {out[-1]:.2f} s", file=sys.stderr)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
