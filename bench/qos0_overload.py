"""Where the commands go when QoS 0 readings come faster than the gateway keeps them.

    .venv/bin/python -m bench.qos0_overload                      # 40k and 20k/s, uplink on and off
    .venv/bin/python -m bench.qos0_overload --rates 40000 --uplink on --seconds 20
    .venv/bin/python -m bench.qos0_overload --broker "max_queued_messages 1000"   # Mosquitto's default

The workload of issue 16's table: a test-bed Mosquitto on loopback with ``set_tcp_nodelay
true`` (and ``sys_interval 1`` for its ``$SYS`` counters), 100 Zigbee2MQTT temperature
sensors, one rule per sensor ``temperature > 30`` commanding its actuator
(``zigbee2mqtt/act-<n>/set``, QoS 1), every 10th reading of every sensor hot (the sensor
crosses the threshold: every hot reading fires, the next one re-arms). Publisher
processes send QoS 0 readings paced at ``--rate`` for ``--seconds``; ``python -m gateway
run`` runs with the exactly-once Kafka uplink (``--uplink on``) or the spool only (``off``).

Every hot reading is accounted for, stage by stage:

1. **published** by the bench (its publishers count them);
2. **lost by the broker**: Mosquitto's ``$SYS/broker/publish/messages/dropped`` (QoS 0
   messages it dropped for a client whose queue was full; ``max_queued_messages`` of the
   test bed) and its ``Outgoing messages are being dropped`` log lines;
3. **received** by edgegw: ``edgegw_readings_total`` against all readings published;
   ``edgegw_rule_fires_total``: one per hot reading received (a reading lost anywhere
   before the rules never fires);
4. **shed** by edgegw: ``edgegw_readings_shed_total`` (QoS 0 readings left out of the spool
   while it was behind; their rules ran);
5. **sent** by edgegw: ``edgegw_commands_sent_total`` (and ``..._held_dropped``, held now);
6. **arrived** at the bench's command subscriber (QoS 1 subscription on every command
   topic, its own paho network thread: it only counts).

The difference between adjacent stages says where the missing commands went. After the
publishers stop the bench waits until the gateway's and the subscriber's counts stop
moving (at most ``--grace`` s), so a late command is not counted as lost.
Nothing is asserted; the figures are indicative on a shared machine.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import re
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from bench import proctree
from bench.brokers import start_brokers
from bench.e2e_bench import (
    THRESHOLD,
    CommandListener,
    Gateway,
    Layout,
    edit_config,
    make_layout,
    make_topics,
    metric,
    publisher_client,
    publishers,
    write_config,
)
from bench.machine import machine_lines
from simulators.testbed import KafkaNode, Mosquitto, free_port

HOT_EVERY = 10
DROPPED_SYS = "$SYS/broker/publish/messages/dropped"


# ---------------------------------------------------------------------- publishers (child processes)
@dataclass(frozen=True)
class Job:
    port: int
    devices: list[str]
    rate: float
    seconds: float


def _publish_child(job: Job, out: mp.Queue[dict[str, Any]]) -> None:
    client = publisher_client(job.port, "bench-q0", 0)
    per_device = dict.fromkeys(job.devices, 0)
    hot = 0
    errors = 0
    n_dev = len(job.devices)
    count = int(job.rate * job.seconds)
    began = time.monotonic()
    for i in range(count):
        wait = began + i / job.rate - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        dev = job.devices[i % n_dev]
        k = per_device[dev]
        per_device[dev] = k + 1
        is_hot = k % HOT_EVERY == HOT_EVERY - 1
        hot += is_hot
        value = (THRESHOLD + 10 if is_hot else THRESHOLD - 10) + k * 1e-6
        body = b'{"temperature":%r,"linkquality":96}' % value
        if client.publish(f"zigbee2mqtt/{dev}", body, qos=0).rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            errors += 1
    elapsed = time.monotonic() - began
    time.sleep(0.5)  # paho's thread writes what is still buffered
    client.disconnect()
    client.loop_stop()
    out.put({"sent": count - errors, "hot": hot, "elapsed": elapsed})


# ---------------------------------------------------------------------- the broker's side
class SysWatch:
    """The broker's ``$SYS`` dropped-messages counter (updated every ``sys_interval``)."""

    def __init__(self, port: int) -> None:
        self.dropped = -1.0
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-sys-{uuid.uuid4().hex[:6]}")
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(DROPPED_SYS, 0)
        self.client.loop_start()

    def _on_message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        with contextlib.suppress(ValueError):
            self.dropped = float(msg.payload)

    def settled(self, seconds: float = 2.5) -> float:
        """The counter after at least one more broker update."""
        time.sleep(seconds)
        return self.dropped

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def broker_drop_lines(log: Path, start: int) -> list[str]:
    text = log.read_text(errors="replace")[start:]
    return re.findall(r"Outgoing messages are being dropped for client (\S+?)\.?$", text, re.MULTILINE)


# ---------------------------------------------------------------------- one run
@dataclass
class Row:
    rate: int
    uplink: str
    published: int = 0
    hot: int = 0
    pub_rate: float = 0.0
    broker_dropped: float = 0.0
    broker_drop_clients: str = ""
    received: float = 0.0
    fires: float = 0.0
    shed: float = 0.0
    holds: float = 0.0
    sent: float = 0.0
    failed: float = 0.0
    held_dropped: float = 0.0
    arrived: int = 0
    settle_s: float = 0.0
    rss_mb: float = 0.0
    drop_reasons: str = ""
    cpu: str = ""


def run_one(work: Path, broker: Mosquitto, node: KafkaNode | None, rate: int, seconds: float, *,
            processes: int, grace: float, devices: int) -> Row:  # fmt: skip
    uplink = "on" if node is not None else "off"
    row = Row(rate, uplink)
    layout, gw_devices = make_layout(devices, devices)
    name = f"r{rate}-{uplink}-{uuid.uuid4().hex[:4]}"
    topics = make_topics(node, f"q0-{name}") if node is not None else {}
    http_port = free_port()
    config = work / f"{name}.json"
    write_config(config, layout, gw_devices, mqtt_port=broker.port, http_port=http_port,
                 bootstrap=node.bootstrap if node is not None else "", topics=topics,
                 state=work / f"state-{name}")  # fmt: skip
    edit_config(
        config, client_id=f"edgegw-q0-{uuid.uuid4().hex[:6]}", otherwise=False, kafka=node is not None
    )
    log_start = broker.log_path.stat().st_size
    command_topics = [f"zigbee2mqtt/{Layout.actuator(d)}/set" for d in layout.rule_devices]
    listener = CommandListener(broker.port, command_topics)
    sys_watch = SysWatch(broker.port)
    gw = Gateway(config, work, http_port)
    try:
        gw.wait_ready(90)
        time.sleep(1.0)  # subscriptions confirmed
        dropped0 = sys_watch.settled()
        broker_cpu0 = proctree.cpu_seconds(broker.pid, tree=False) if broker.pid else 0.0
        shards = [layout.devices[k::processes] for k in range(processes)]
        jobs = [Job(broker.port, shard, rate / processes, seconds) for shard in shards]
        with publishers(jobs, _publish_child) as results:
            row.published = sum(r["sent"] for r in results)
            row.hot = sum(r["hot"] for r in results)
            row.pub_rate = row.published / max(r["elapsed"] for r in results)
        done = time.monotonic()
        last: tuple[float, int] = (-1.0, -1)
        stable_since = time.monotonic()
        while time.monotonic() - done < grace:
            series = gw.scrape() or {}
            now = (metric(series, "edgegw_readings_total") + metric(series, "edgegw_commands_sent_total"),
                   listener.count())  # fmt: skip
            if now != last:
                last, stable_since = now, time.monotonic()
            elif time.monotonic() - stable_since > 3.0:
                break
            time.sleep(0.5)
        row.settle_s = stable_since - done
        row.broker_dropped = sys_watch.settled() - dropped0
        clients = broker_drop_lines(broker.log_path, log_start)
        row.broker_drop_clients = ",".join(sorted(set(clients)))
        series = gw.scrape() or {}
        row.received = metric(series, "edgegw_readings_total")
        row.fires = metric(series, "edgegw_rule_fires_total")
        row.shed = metric(series, "edgegw_readings_shed_total")
        row.holds = metric(series, "edgegw_mqtt_holds_total")
        row.sent = metric(series, "edgegw_commands_sent_total")
        row.failed = metric(series, "edgegw_commands_failed_total")
        row.held_dropped = metric(series, "edgegw_commands_held_dropped_total")
        row.arrived = listener.count()
        row.rss_mb = gw.memory_mb()[1]
        reasons: dict[str, float] = {}
        for key, value in series.items():
            if key.startswith("edgegw_commands_held_dropped_total{") and value:
                reason = re.search(r'reason="([^"]*)"', key)
                if reason:
                    reasons[reason.group(1)] = reasons.get(reason.group(1), 0.0) + value
        row.drop_reasons = ", ".join(f"{k} {v:,.0f}" for k, v in sorted(reasons.items()))
        threads = gw.thread_cpu()
        broker_cpu = proctree.cpu_seconds(broker.pid, tree=False) - broker_cpu0 if broker.pid else 0.0
        per_thread = ", ".join(f"{k} {v:.1f} s" for k, v in sorted(threads.items()))
        row.cpu = f"broker {broker_cpu:.1f} s, {per_thread}"
    finally:
        gw.stop()
        listener.close()
        sys_watch.close()
    return row


def _pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.2f} %" if whole else "-"


def _row(r: Row) -> str:
    dropped = f"{r.broker_dropped:,.0f}" + (f" ({r.broker_drop_clients})" if r.broker_drop_clients else "")
    lost = r.hot - r.arrived
    return (
        f"| {r.rate // 1000}k/s | {r.uplink} | {r.published:,} ({r.hot:,}) | {r.pub_rate:,.0f}/s | "
        f"{dropped} | "
        f"{r.received:,.0f} ({_pct(r.published - r.received, r.published)} lost) | "
        f"{r.hot - r.fires:,.0f} | {r.fires:,.0f} | {r.shed:,.0f} | {r.holds:,.0f} | {r.sent:,.0f} | "
        f"{r.failed:,.0f} / {r.held_dropped:,.0f} | {r.arrived:,} | {lost:,.0f} ({_pct(lost, r.hot)}) | "
        f"{r.settle_s:.1f} s | {r.rss_mb:.0f} MiB |"
    )


def report(rows: list[Row], seconds: float) -> str:
    head = ("| rate | uplink | published (hot) | publisher rate | broker dropped | gateway received | "
            "hot lost before rules | fires | readings shed | holds | commands sent | failed / held-dropped | "
            "arrived | commands lost | settle | VmHWM |")  # fmt: skip
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    lines += [_row(r) for r in rows]
    lines.append("")
    for r in rows:
        if r.drop_reasons:
            lines.append(f"- {r.rate // 1000}k/s uplink {r.uplink}: held commands dropped: {r.drop_reasons}")
        lines.append(f"- {r.rate // 1000}k/s uplink {r.uplink}: CPU {r.cpu}")
    lines.append(
        f"{seconds:.0f} s per run; commands lost = hot readings published - commands arrived; "
        "hot lost before rules = hot published - fires (lost by the broker or never read)."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rates", type=int, nargs="+", default=[40_000, 20_000])
    parser.add_argument("--uplink", choices=("on", "off", "both"), default="both")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--publishers", type=int, default=2, help="publisher processes")
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument(
        "--broker",
        action="append",
        default=[],
        metavar="LINE",
        help="a line for the test Mosquitto's config, e.g. 'max_queued_messages 1000' (Mosquitto's own "
        "default; the test bed's is 1,000,000)",
    )
    parser.add_argument("--grace", type=float, default=120.0, help="max seconds to wait for stragglers")
    args = parser.parse_args(argv)
    uplinks = ["on", "off"] if args.uplink == "both" else [args.uplink]
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="edgegw-q0-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        lines = ["sys_interval 1", *args.broker]
        broker, node = start_brokers(stack, work, kafka="on" in uplinks, lines=lines)
        for rate in args.rates:
            for uplink in uplinks:
                print(f"{rate}/s QoS 0, uplink {uplink} ...", flush=True)
                row = run_one(work, broker, node if uplink == "on" else None, rate, args.seconds,
                              processes=args.publishers, grace=args.grace, devices=args.devices)  # fmt: skip
                rows.append(row)
                print(report([row], args.seconds).splitlines()[2], flush=True)
    print()
    print("\n".join(machine_lines()))
    print()
    print(report(rows, args.seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
