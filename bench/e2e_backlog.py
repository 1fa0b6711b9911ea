"""Building blocks of ``bench.e2e_bench``'s backlog and outage phases, and its latency summary.

- :func:`prefill_spool`: append N readings to the spool file a gateway config names, with
  the same :class:`~bridge.config.SpoolConfig` and drain lanes the gateway will use (as
  ``gateway.runtime`` opens it), before that gateway starts: a backlog for its forwarder.
  Their values are ``-1, -2, ... -N``: negative, unlike any live reading, and unique.
- :func:`audit_topic`: afterwards, a ``read_committed`` consumer reads a readings topic from
  the start and counts backlog and live readings (lost, duplicated), duplicate ``ce_id``
  headers, and when the first and last record of each were appended (the bench creates its
  readings topics with ``message.timestamp.type=LogAppendTime``: the broker stamps them).
- :class:`RssSampler`: VmRSS of a process every few seconds, in a thread.
- :func:`summarise`: p50 / p99 / max of matched crossings and commands, optionally only of
  the crossings sent before a moment (the end of a drain).
- :func:`backlog_rows`, :func:`outage_rows`: their lines of the report's table.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import confluent_kafka

from bridge.envelope import Record, encode_item
from bridge.policy import Kind, lane_priorities
from bridge.spool import Spool
from gateway.config import load_config
from gateway.model import Reading

__all__ = [
    "BacklogRun",
    "Latency",
    "OutageRun",
    "RssSampler",
    "TopicAudit",
    "audit_topic",
    "backlog_rows",
    "met",
    "outage_rows",
    "percentile",
    "prefill_spool",
    "summarise",
]

MIB_PER_MB = 1.048576  # the 50 MB target is in MB, /proc reports KiB


# ---------------------------------------------------------------------- latency
@dataclass(frozen=True)
class Latency:
    p50: float
    p99: float
    worst: float
    sent: int
    seen: int
    wrong: int
    achieved: float


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summarise(
    sends: list[int],
    arrivals: list[tuple[int, bytes]],
    count: int,
    elapsed: float,
    window: tuple[int, int] | None = None,
) -> Latency:
    """The n-th command matched with the n-th crossing (ms); with ``window`` (``time.time_ns``
    bounds) only the crossings sent inside it count."""
    picked = [j for j, sent in enumerate(sends) if window is None or window[0] <= sent <= window[1]]
    matched = [j for j in picked if j < len(arrivals)]
    lat = [(arrivals[j][0] - sends[j]) / 1e6 for j in matched] or [float("nan")]
    wrong = sum(1 for j in matched if (b'"ON"' in arrivals[j][1]) != (j % 2 == 0))
    achieved = count / elapsed if elapsed > 0 else 0.0
    return Latency(
        statistics.median(lat), percentile(lat, 0.99), max(lat), len(picked), len(matched), wrong, achieved
    )


def met(ok: bool) -> str:
    return "met" if ok else "**not met**"


# ---------------------------------------------------------------------- the backlog
def _backlog_record(n: int, devices: list[str], now: float) -> Record:
    dev = devices[n % len(devices)]
    kind, key, ts, data = encode_item(Reading(dev, "temperature", -1.0 - n, now, now, "°C"))
    return Record(Kind(kind), key, ts, data)


def prefill_spool(config_path: Path, devices: list[str], count: int, chunk: int = 10_000) -> float:
    """Append ``count`` readings to the spool the gateway of ``config_path`` will open
    (gateway stopped); returns the seconds it took."""
    config = load_config(config_path).config
    spool_cfg = config.bridge.spool
    if "path" not in spool_cfg.model_fields_set:  # as gateway.runtime.Runtime._open_spool
        spool_cfg = spool_cfg.model_copy(update={"path": config.gateway.resolved_state_dir() / "spool.db"})
    kafka = config.bridge.kafka
    lanes = lane_priorities(kafka.topics.of_kind()) if kafka is not None else None
    spool_cfg.path.parent.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    now = time.time()
    with Spool.open(spool_cfg, lanes=lanes) as spool:
        for start in range(0, count, chunk):
            spool.append_many(
                [_backlog_record(n, devices, now) for n in range(start, min(count, start + chunk))],
                timeout=120,
            )
    return time.monotonic() - began


@dataclass
class TopicAudit:
    """What a read_committed consumer found in one readings topic."""

    backlog_expected: int
    live_expected: int
    records: int = 0
    ce_ids: set[str | bytes] = field(default_factory=set)
    backlog_seen: bytearray = field(default_factory=bytearray)
    backlog_records: int = 0
    live: set[tuple[str, float]] = field(default_factory=set)
    live_records: int = 0
    first_ms: int = 0
    """LogAppendTime of the first record (any), epoch ms; 0 when none."""
    backlog_first_ms: int = 0
    backlog_last_ms: int = 0
    live_last_ms: int = 0

    @property
    def backlog_lost(self) -> int:
        return self.backlog_seen.count(0)

    @property
    def backlog_dup(self) -> int:
        return self.backlog_records - (self.backlog_expected - self.backlog_lost)

    @property
    def live_lost(self) -> int:
        return max(0, self.live_expected - len(self.live))

    @property
    def live_dup(self) -> int:
        return self.live_records - len(self.live)

    @property
    def ce_id_dup(self) -> int:
        return self.records - len(self.ce_ids)

    @property
    def last_ms(self) -> int:
        return max(self.backlog_last_ms, self.live_last_ms)

    def _add(self, msg: confluent_kafka.Message) -> None:
        self.records += 1
        self.ce_ids.add(dict(msg.headers() or []).get("ce_id") or b"")
        ts = msg.timestamp()[1]
        if not self.first_ms or ts < self.first_ms:
            self.first_ms = ts
        data = json.loads(msg.value() or b"{}")
        value = data.get("value", 0.0)
        if isinstance(value, int | float) and value < 0:
            n = int(-value) - 1
            if 0 <= n < self.backlog_expected:
                self.backlog_seen[n] = 1
            self.backlog_records += 1
            self.backlog_first_ms = min(self.backlog_first_ms or ts, ts)
            self.backlog_last_ms = max(self.backlog_last_ms, ts)
        else:
            self.live.add((data.get("device_id", ""), value))
            self.live_records += 1
            self.live_last_ms = max(self.live_last_ms, ts)


def audit_topic(
    bootstrap: str, topic: str, *, backlog: int, live: int, timeout: float, quiet: float = 3.0
) -> TopicAudit:
    """Read ``topic`` from the start until ``backlog + live`` records are in and none came
    for ``quiet`` seconds (late duplicates would), or until ``timeout``."""
    audit = TopicAudit(backlog, live, backlog_seen=bytearray(backlog))
    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-audit-{uuid.uuid4().hex[:6]}",
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    deadline = time.monotonic() + timeout
    last_new = time.monotonic()
    try:
        while time.monotonic() < deadline:
            batch = consumer.consume(5000, timeout=0.5)
            for msg in batch:
                if msg.error() is None:
                    audit._add(msg)
            now = time.monotonic()
            if batch:
                last_new = now
            if audit.records >= backlog + live and now - last_new >= quiet:
                break
    finally:
        consumer.close()
    return audit


class RssSampler(threading.Thread):
    """``read()`` (VmRSS, MiB) every ``interval`` seconds until :meth:`finish`."""

    def __init__(self, read: Callable[[], float], interval: float = 5.0) -> None:
        super().__init__(daemon=True)
        self.read = read
        self.interval = interval
        self.samples: list[float] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while True:
            try:
                self.samples.append(self.read())
            except OSError:  # the process is gone
                return
            if self._halt.wait(self.interval):
                return

    def finish(self) -> list[float]:
        self._halt.set()
        self.join(timeout=10)
        return self.samples


# ---------------------------------------------------------------------- figures and rows
@dataclass
class BacklogRun:
    rate: int
    events: int
    who: str = "edgegw"
    """``edgegw``: the gateway's own latency; ``bare``: the bare reference's, under the same drain."""
    fill_seconds: float = 0.0
    ready_wall: float = 0.0
    """time.time() when the gateway logged READY."""
    probe_after: float = float("nan")
    """Seconds from READY to the first /metrics answer that showed the drain under way."""
    probe_shipped: float = 0.0
    probe_depth: float = 0.0
    probe_uplink: str = "?"
    window_ns: tuple[int, int] = (0, 0)
    """First and last crossing sent."""
    latency: Latency | None = None
    """Only the crossings sent while the backlog was draining (first to last backlog record appended)."""
    latency_all: Latency | None = None
    live: int = 0
    audit: TopicAudit | None = None
    rss: float = 0.0
    hwm: float = 0.0

    @property
    def drain_ns(self) -> tuple[int, int]:
        """First and last backlog record appended in Kafka, ``time.time_ns`` scale."""
        a = self.audit
        return (0, 0) if a is None else (a.backlog_first_ms * 1_000_000, a.backlog_last_ms * 1_000_000)

    @property
    def drain_seconds(self) -> float:
        """READY to the last backlog record appended in Kafka."""
        return self.drain_ns[1] / 1e9 - self.ready_wall

    @property
    def drain_rate(self) -> float:
        """Backlog events/s between the first and the last appended."""
        first, last = self.drain_ns
        return self.audit.backlog_records / ((last - first) / 1e9) if self.audit and last > first else 0.0

    @property
    def window_in_drain(self) -> float:
        """Share of the latency window during which the backlog was draining."""
        begin, end = self.window_ns
        first, last = self.drain_ns
        if end <= begin:
            return 0.0
        return max(0, min(end, last) - max(begin, first)) / (end - begin)


@dataclass
class OutageRun:
    seconds: float
    rate: int
    rss_before: float = 0.0
    samples: list[float] = field(default_factory=list)
    rss_end: float = 0.0
    hwm_end: float = 0.0
    depth_end: float = 0.0
    kafka_stop_s: float = 0.0
    kafka_start_s: float = 0.0
    kafka_ready_wall: float = 0.0
    latency: Latency | None = None
    live: int = 0
    audit: TopicAudit | None = None
    rss_after: float = 0.0

    @property
    def drain_seconds(self) -> float:
        """Kafka ready again to the last outage reading appended."""
        if self.audit is None or not self.audit.live_last_ms:
            return float("nan")
        return self.audit.live_last_ms / 1000 - self.kafka_ready_wall


Row = tuple[str, str, str, str]


def backlog_rows(runs: list[BacklogRun], targets: dict[int, float]) -> list[Row]:
    rows: list[Row] = []
    bare = {run.rate: run.latency for run in runs if run.who == "bare" and run.latency is not None}
    for run in runs:
        k, target = f"{run.rate // 1000}k", targets[run.rate]
        lat, every, a = run.latency, run.latency_all, run.audit
        if run.who == "bare":
            rows += _bare_rows(run)
            continue
        if lat is not None and every is not None:
            ref = bare.get(run.rate)
            versus = "" if ref is None else f"; the bare echo under the same drain: p99 {ref.p99:.2f} ms"
            rows.append(
                (
                    f"sensor -> actuator at {k} readings/s while the uplink drains a {run.events:,}-event "
                    "backlog, p50 / p99 / max",
                    f"{lat.p50:.2f} / {lat.p99:.2f} / {lat.worst:.2f} ms ({lat.seen}/{lat.sent} commands; "
                    f"the crossings sent during the drain, {run.window_in_drain:.0%} "
                    f"of the {_window_seconds(run):g} s window{versus})",
                    f"p99 <= {target:.0f} ms",
                    met(lat.p99 <= target and lat.seen == lat.sent and lat.sent > 0),
                )
            )
            if run.window_in_drain < 1.0:
                rows.append(
                    (
                        f"  same, every crossing of the window (some with the drain over), {k}/s",
                        f"{every.p50:.2f} / {every.p99:.2f} / {every.worst:.2f} ms "
                        f"({every.seen}/{every.sent} commands)",
                        "",
                        "",
                    )
                )
        rows.append(
            (
                f"  /metrics during the {k}/s backlog phase (first answer after READY)",
                f"after {run.probe_after:.1f} s: uplink {run.probe_uplink}, "
                f"{run.probe_shipped:,.0f} shipped, {run.probe_depth:,.0f} rows in the spool",
                "",
                "",
            )
        )
        if a is not None:
            rows += [
                (
                    f"  {run.events:,}-event backlog ({k}/s phase): READY to the last one in Kafka; "
                    "first to last appended",
                    f"{run.drain_seconds:.1f} s; {run.drain_rate:,.0f} events/s "
                    f"(spool pre-filled in {run.fill_seconds:.1f} s)",
                    "",
                    "",
                ),
                (
                    f"  backlog lost / duplicated; live readings lost / duplicated (ce_id dups), {k}/s phase",
                    f"{a.backlog_lost} / {a.backlog_dup}; {a.live_lost} / {a.live_dup} ({a.ce_id_dup}) "
                    f"of {run.events:,} + {run.live:,}",
                    "0 / 0; 0 / 0",
                    met(a.backlog_lost == a.backlog_dup == a.live_lost == a.live_dup == 0),
                ),
            ]
        rows.append(
            (f"  VmRSS; VmHWM after the {k}/s backlog phase", f"{run.rss:.1f} MiB; {run.hwm:.1f} MiB", "", "")
        )
    return rows


def _bare_rows(run: BacklogRun) -> list[Row]:
    """The bare reference's lines: its latency while an edgegw uplink drained the same backlog
    (the gateway's rule path idle), and that the drain lost nothing."""
    k, lat, a = f"{run.rate // 1000}k", run.latency, run.audit
    if lat is None or a is None:
        return []
    return [
        (
            f"  reference: the bare paho echo at {k} readings/s while an edgegw uplink drains the same "
            "backlog, p50 / p99 / max",
            f"{lat.p50:.2f} / {lat.p99:.2f} / {lat.worst:.2f} ms ({lat.seen}/{lat.sent} commands; "
            f"{run.window_in_drain:.0%} of the {_window_seconds(run):g} s window; drained at "
            f"{run.drain_rate:,.0f} events/s)",
            "",
            "",
        ),
        (
            f"  backlog lost / duplicated, {k}/s reference phase",
            f"{a.backlog_lost} / {a.backlog_dup} of {run.events:,}",
            "0 / 0",
            met(a.backlog_lost == a.backlog_dup == 0),
        ),
    ]


def _window_seconds(run: BacklogRun) -> float:
    begin, end = run.window_ns
    return round((end - begin) / 1e9, 1)


def outage_rows(run: OutageRun, target_mb: float) -> list[Row]:
    samples = run.samples or [float("nan")]
    worst = max(samples)
    rows: list[Row] = [
        (
            f"VmRSS during a {run.seconds:g} s Kafka outage at {run.rate:,} readings/s: "
            f"median / max / at the end ({len(run.samples)} samples, 5 s apart)",
            f"{statistics.median(samples):.1f} / {worst:.1f} / {run.rss_end:.1f} MiB "
            f"(VmHWM {run.hwm_end:.1f}; {run.rss_before:.1f} before the outage)",
            "<= 50 MB",
            met(worst * MIB_PER_MB <= target_mb),
        ),
    ]
    if run.latency is not None:
        lat = run.latency
        rows.append(
            (
                "  sensor -> actuator during the outage, p50 / p99 / max",
                f"{lat.p50:.2f} / {lat.p99:.2f} / {lat.worst:.2f} ms ({lat.seen}/{lat.sent} commands)",
                "",
                "",
            )
        )
    rows.append(
        (
            "  Kafka stopped in; started again in (to a metadata answer)",
            f"{run.kafka_stop_s:.1f} s; {run.kafka_start_s:.1f} s "
            f"({run.depth_end:,.0f} rows in the spool at the end of the outage)",
            "",
            "",
        )
    )
    a = run.audit
    if a is not None:
        rows += [
            (
                "  outage backlog: Kafka ready again to the last reading in Kafka",
                f"{run.drain_seconds:.1f} s",
                "",
                "",
            ),
            (
                "  lost / duplicated outage readings in Kafka (ce_id dups)",
                f"{a.live_lost} / {a.live_dup} ({a.ce_id_dup}) of {run.live:,}",
                "0 / 0",
                met(a.live_lost == 0 and a.live_dup == 0),
            ),
            ("  VmRSS after the outage backlog drained", f"{run.rss_after:.1f} MiB", "", ""),
        ]
    return rows
