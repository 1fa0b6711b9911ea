"""The pure parts of ``bench.peers``: matching commands to hot readings, the pass rule, medians, tables.

- :func:`match`: per device, the n-th command on its command topic is the answer to its
  n-th hot reading; latency = arrival - send time (ms). Commands beyond the hot readings
  are counted as extra (a QoS 1 duplicate), missing ones as lost.
- :func:`verdict`: a rate passes when nothing is lost, p99 < 1 s and the publisher kept up
  (achieved >= 95 % of the asked rate).
- :func:`combine`: the median of repeated runs of one rate; it passes when most did.
- :func:`summary_table` (the issue's columns) and :func:`detail_table` (one line per peer,
  QoS and rate), markdown.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from bench.e2e_backlog import percentile

__all__ = [
    "KEEP_UP",
    "P99_LIMIT_MS",
    "Checkout",
    "Matched",
    "PeerResult",
    "RateRun",
    "combine",
    "detail_table",
    "fmt_ms",
    "fmt_rate",
    "match",
    "max_passed",
    "parse_edgegw",
    "summary_table",
    "verdict",
]

P99_LIMIT_MS = 1000.0
KEEP_UP = 0.95


@dataclass(frozen=True)
class Matched:
    latencies_ms: list[float]
    expected: int
    arrived: int
    lost: int
    extra: int


def match(sends: Mapping[str, Sequence[int]], arrivals: Mapping[str, Sequence[int]]) -> Matched:
    """``sends``: command topic -> send times (ns) of its hot readings, in order;
    ``arrivals``: command topic -> arrival times (ns) of its commands, in order."""
    latencies: list[float] = []
    expected = arrived = lost = extra = 0
    for topic, sent in sends.items():
        got = arrivals.get(topic, ())
        expected += len(sent)
        arrived += min(len(got), len(sent))
        lost += max(0, len(sent) - len(got))
        extra += max(0, len(got) - len(sent))
        latencies += [(a - s) / 1e6 for s, a in zip(sent, got, strict=False)]
    for topic, got in arrivals.items():
        if topic not in sends:
            extra += len(got)
    return Matched(latencies, expected, arrived, lost, extra)


def verdict(lost: int, p99_ms: float, asked: float, achieved: float) -> tuple[bool, str]:
    """(passed, why not: '' when passed)."""
    why = []
    if lost:
        why.append(f"lost {lost}")
    if not p99_ms < P99_LIMIT_MS:  # NaN (nothing arrived) fails too
        why.append("p99 >= 1 s")
    if achieved < KEEP_UP * asked:
        why.append(f"publisher {achieved / asked:.0%} of the rate")
    return not why, ", ".join(why)


@dataclass(frozen=True)
class RateRun:
    """One rate for one peer (or the median of its repeats)."""

    qos: int
    rate: int
    achieved: float
    expected: int
    arrived: int
    lost: int
    extra: int
    p50: float
    p99: float
    worst: float
    cpu_per_k: float
    passed: bool
    why: str
    repeats: int = 1

    @classmethod
    def of(cls, qos: int, rate: int, achieved: float, matched: Matched, cpu_per_k: float) -> RateRun:
        lat = matched.latencies_ms or [float("nan")]
        p99 = percentile(lat, 0.99)
        passed, why = verdict(matched.lost, p99, rate, achieved)
        return cls(qos, rate, achieved, matched.expected, matched.arrived, matched.lost, matched.extra,
                   statistics.median(lat), p99, max(lat), cpu_per_k, passed, why)  # fmt: skip


def combine(runs: Sequence[RateRun]) -> RateRun:
    """Medians of the repeats of one rate; passes when more than half passed."""
    if len(runs) == 1:
        return runs[0]

    def med(values: Sequence[float]) -> float:
        return float(statistics.median(values))

    passed = sum(r.passed for r in runs) * 2 > len(runs)
    whys = sorted({r.why for r in runs if r.why})
    return replace(
        runs[0],
        achieved=med([r.achieved for r in runs]),
        expected=round(med([r.expected for r in runs])),
        arrived=round(med([r.arrived for r in runs])),
        lost=round(med([r.lost for r in runs])),
        extra=round(med([r.extra for r in runs])),
        p50=med([r.p50 for r in runs]),
        p99=med([r.p99 for r in runs]),
        worst=max(r.worst for r in runs),
        cpu_per_k=med([r.cpu_per_k for r in runs]),
        passed=passed,
        why="; ".join(whys),
        repeats=len(runs),
    )


def max_passed(runs: Sequence[RateRun], qos: int) -> int | None:
    rates = [r.rate for r in runs if r.qos == qos and r.passed]
    return max(rates) if rates else None


@dataclass
class PeerResult:
    """One row: a peer's runs at every QoS and rate, and its processes' VmRSS (MiB) by QoS run."""

    label: str
    runs: list[RateRun] = field(default_factory=list)
    rss_idle: dict[str, float] = field(default_factory=dict)  # process -> lowest idle VmRSS
    rss_end: dict[str, float] = field(default_factory=dict)  # process -> highest VmRSS at the end
    note: str = ""

    def run(self, qos: int, rate: int) -> RateRun | None:
        return next((r for r in self.runs if r.qos == qos and r.rate == rate), None)

    def note_rss(self, idle: Mapping[str, float], end: Mapping[str, float]) -> None:
        for name, mib in idle.items():
            self.rss_idle[name] = min(mib, self.rss_idle.get(name, mib))
        for name, mib in end.items():
            self.rss_end[name] = max(mib, self.rss_end.get(name, mib))


def fmt_rate(rate: float | None) -> str:
    if rate is None:
        return "none"
    return f"{rate / 1000:g}k" if rate >= 1000 else f"{rate:g}"


def fmt_ms(ms: float) -> str:
    if ms != ms:  # NaN: nothing arrived
        return "-"
    if ms >= 1000:
        return f"{ms / 1000:.2f} s"
    return f"{ms:.2f} ms" if ms < 100 else f"{ms:.0f} ms"


def _p99_cell(run: RateRun | None) -> str:
    if run is None:
        return "not run"
    if run.passed:
        return fmt_ms(run.p99)
    return f"fails ({run.why}; p50 {fmt_ms(run.p50)}, p99 {fmt_ms(run.p99)})"


def _max_cell(result: PeerResult, qos: int) -> str:
    ran = [r for r in result.runs if r.qos == qos]
    if not ran:
        return "not run"
    best = max_passed(result.runs, qos)
    cell = fmt_rate(best)
    above = [r for r in ran if not r.passed and (best is None or r.rate > best)]
    if above:
        first = min(above, key=lambda r: r.rate)
        cell += f" ({fmt_rate(first.rate)}: {first.why})"
    return cell


def _rss_cell(result: PeerResult) -> str:
    if not result.rss_idle and not result.rss_end:
        return "-"
    parts = []
    for name in dict.fromkeys([*result.rss_idle, *result.rss_end]):
        idle, end = result.rss_idle.get(name), result.rss_end.get(name)
        span = f"{idle:.0f}-{end:.0f}" if idle is not None and end is not None else f"{idle or end:.0f}"
        parts.append(f"{span} MiB" if name == "main" else f"{name} {span} MiB")
    return " + ".join(parts)


def summary_table(results: Sequence[PeerResult]) -> str:
    """The issue's table: QoS 0 max passed, p99 at 1k and 5k; QoS 1 max passed, p99 at 5k and
    10k; VmRSS idle-end of the main process (and of each child process)."""
    lines = [
        "| | QoS 0 max passed | p99 @1k/s | p99 @5k/s | QoS 1 max passed | QoS 1 p99 @5k/s "
        "| QoS 1 p99 @10k/s | RSS (idle-end) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for res in results:
        if res.note and not res.runs:
            lines.append(f"| {res.label} | {res.note} | | | | | | |")
            continue
        cells = [
            _max_cell(res, 0),
            _p99_cell(res.run(0, 1000)),
            _p99_cell(res.run(0, 5000)),
            _max_cell(res, 1),
            _p99_cell(res.run(1, 5000)),
            _p99_cell(res.run(1, 10_000)),
            _rss_cell(res),
        ]
        lines.append(f"| {res.label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def detail_table(results: Sequence[PeerResult]) -> str:
    lines = [
        "| peer | QoS | rate/s | published/s | commands arrived/expected | lost | extra | p50 | p99 | max "
        "| CPU s per 1k readings | passed |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for res in results:
        for r in sorted(res.runs, key=lambda r: (r.qos, r.rate)):
            verdict_cell = "yes" if r.passed else f"no: {r.why}"
            if r.repeats > 1:
                verdict_cell += f" (median of {r.repeats})"
            lines.append(
                f"| {res.label} | {r.qos} | {r.rate:,} | {r.achieved:,.0f} | {r.arrived:,}/{r.expected:,} "
                f"| {r.lost:,} | {r.extra:,} | {fmt_ms(r.p50)} | {fmt_ms(r.p99)} | {fmt_ms(r.worst)} "
                f"| {r.cpu_per_k:.3f} | {verdict_cell} |"
            )
    return "\n".join(lines)


@dataclass(frozen=True)
class Checkout:
    """An edgegw tree to run (``--edgegw NAME=ROOT:PYTHON``)."""

    name: str
    root: Path
    python: Path


def parse_edgegw(spec: str) -> Checkout:
    """``before=/work/wt/before:/work/wt/before/.venv/bin/python`` -> Checkout; ValueError when malformed."""
    name, eq, rest = spec.partition("=")
    root, colon, python = rest.partition(":")
    if not eq or not colon or not name.strip() or not root or not python:
        raise ValueError(f"--edgegw wants NAME=ROOT:PYTHON, not {spec!r}")
    return Checkout(name.strip(), Path(root), Path(python))
