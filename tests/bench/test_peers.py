"""The pure parts of ``bench.peers``: matching commands to hot readings, the pass rule,
medians of repeats, the tables, the command line. No broker, no wall time."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from bench.peers import PeerProcess, _ints, load_jobs, peers_of
from bench.peers_bare import command_topic
from bench.peers_nodered import flows
from bench.peers_report import (
    Checkout,
    Matched,
    PeerResult,
    RateRun,
    combine,
    detail_table,
    fmt_ms,
    fmt_rate,
    match,
    max_passed,
    parse_edgegw,
    summary_table,
    verdict,
)

MS = 1_000_000  # ns


def test_match_pairs_the_nth_command_with_the_nth_hot_reading_per_topic() -> None:
    sends = {"a/set": [0, 10 * MS, 20 * MS], "b/set": [5 * MS]}
    arrivals = {"a/set": [1 * MS, 12 * MS, 23 * MS], "b/set": [9 * MS]}
    got = match(sends, arrivals)
    assert sorted(got.latencies_ms) == [1.0, 2.0, 3.0, 4.0]
    assert (got.expected, got.arrived, got.lost, got.extra) == (4, 4, 0, 0)


def test_match_counts_lost_and_extra_commands() -> None:
    sends = {"a/set": [0, 10 * MS, 20 * MS], "b/set": [5 * MS]}
    arrivals = {"a/set": [1 * MS], "b/set": [6 * MS, 7 * MS], "stray/set": [1]}
    got = match(sends, arrivals)
    assert (got.expected, got.arrived, got.lost, got.extra) == (4, 2, 2, 2)
    assert sorted(got.latencies_ms) == [1.0, 1.0]


@pytest.mark.parametrize(
    ("lost", "p99", "achieved", "passed", "why"),
    [
        (0, 999.0, 950.0, True, ""),
        (1, 5.0, 1000.0, False, "lost 1"),
        (0, 1000.0, 1000.0, False, "p99 >= 1 s"),
        (0, float("nan"), 1000.0, False, "p99 >= 1 s"),
        (0, 5.0, 949.0, False, "publisher 95% of the rate"),
        (3, 2000.0, 500.0, False, "lost 3, p99 >= 1 s, publisher 50% of the rate"),
    ],
)
def test_verdict(lost: int, p99: float, achieved: float, passed: bool, why: str) -> None:
    assert verdict(lost, p99, 1000, achieved) == (passed, why)


def _run(qos: int, rate: int, p99: float, *, lost: int = 0, achieved: float | None = None) -> RateRun:
    matched = Matched([p99] * 100, 100, 100 - lost, lost, 0)
    return RateRun.of(qos, rate, rate if achieved is None else achieved, matched, 0.25)


def test_rate_run_takes_its_verdict_from_the_figures() -> None:
    assert _run(0, 1000, 3.0).passed
    assert not _run(0, 1000, 3.0, lost=1).passed
    assert _run(0, 1000, 3.0, lost=1).why == "lost 1"


def test_combine_takes_medians_and_the_majority() -> None:
    runs = [_run(1, 5000, 2.0), _run(1, 5000, 4.0), _run(1, 5000, 1500.0)]
    got = combine(runs)
    assert got.p99 == 4.0
    assert got.passed
    assert got.repeats == 3
    assert got.why == "p99 >= 1 s"
    assert not combine([_run(1, 5000, 2.0), _run(1, 5000, 2.0, lost=5)]).passed


def test_max_passed_is_the_highest_passing_rate_of_that_qos() -> None:
    runs = [_run(0, 1000, 1.0), _run(0, 5000, 1.0), _run(0, 10_000, 2000.0), _run(1, 1000, 1.0)]
    assert max_passed(runs, 0) == 5000
    assert max_passed(runs, 1) == 1000
    assert max_passed([_run(0, 1000, 2000.0)], 0) is None


def test_formats() -> None:
    assert fmt_rate(20_000) == "20k"
    assert fmt_rate(500) == "500"
    assert fmt_rate(None) == "none"
    assert fmt_ms(0.734) == "0.73 ms"
    assert fmt_ms(868.2) == "868 ms"
    assert fmt_ms(1300.0) == "1.30 s"
    assert fmt_ms(float("nan")) == "-"


def test_summary_table_has_the_issue_columns() -> None:
    res = PeerResult("edgegw, spool only")
    res.runs = [
        _run(0, 1000, 1.22),
        _run(0, 5000, 2.7),
        _run(0, 20_000, 5.0),
        _run(1, 5000, 4.41),
        _run(1, 10_000, 1300.0),
    ]
    res.note_rss({"main": 54.2, "python3 123": 30.0}, {"main": 60.0, "python3 123": 31.0})
    res.note_rss({"main": 55.0}, {"main": 71.4})
    skipped = PeerResult("Node-RED 4.1 (no durability)", note="not run: npm is not installed")
    lines = summary_table([res, skipped]).splitlines()
    assert lines[0].count("|") == 9
    assert lines[2] == (
        "| edgegw, spool only | 20k | 1.22 ms | 2.70 ms | 5k (10k: p99 >= 1 s) | 4.41 ms "
        "| fails (p99 >= 1 s; p50 1.30 s, p99 1.30 s) | 54-71 MiB + python3 123 30-31 MiB |"
    )
    assert lines[3].startswith("| Node-RED 4.1 (no durability) | not run: npm is not installed |")


def test_detail_table_has_a_line_per_qos_and_rate() -> None:
    res = PeerResult("bare")
    res.runs = [_run(1, 1000, 1.0), _run(0, 1000, 1.0, lost=2)]
    lines = detail_table([res]).splitlines()
    assert len(lines) == 4
    assert lines[2].startswith("| bare | 0 | 1,000 | 1,000 | 98/100 | 2 | 0 |")
    assert lines[2].endswith("| 0.250 | no: lost 2 |")


def test_parse_edgegw() -> None:
    got = parse_edgegw("before=/work/wt/before:/work/wt/before/.venv/bin/python")
    assert got == Checkout("before", Path("/work/wt/before"), Path("/work/wt/before/.venv/bin/python"))
    for bad in ("before", "before=/x", "=/x:/y", "before=:/y", "before=/x:"):
        with pytest.raises(ValueError, match="NAME=ROOT:PYTHON"):
            parse_edgegw(bad)


def test_peer_rows_per_checkout() -> None:
    checkouts = [Checkout("this", Path("/a"), Path("/a/py")), Checkout("before", Path("/b"), Path("/b/py"))]
    labels = [p.label for p in peers_of(["bare", "edgegw-eos"], checkouts)]
    assert labels == [
        "bare paho subscriber (reference)",
        "edgegw, spool + exactly-once Kafka",
        "edgegw before, spool + exactly-once Kafka",
    ]


def test_load_is_split_over_processes_by_devices() -> None:
    devices = [f"t-{n:04d}" for n in range(100)]
    jobs = load_jobs(1883, devices, 25_000, 2.0, 1, 10_000)
    assert len(jobs) == 3
    assert sorted(d for job in jobs for d in job.devices) == devices
    assert sum(job.count for job in jobs) == pytest.approx(50_000, abs=3)
    assert sum(job.rate for job in jobs) == pytest.approx(25_000)
    assert _ints("1k,5000, 2.5k") == [1000, 5000, 2500]


def test_peers_send_what_edgegw_sends_where_it_sends_it() -> None:
    assert command_topic("zigbee2mqtt/t-0042") == "zigbee2mqtt/act-0042/set"
    flow = flows(1883, 1)
    rule = next(node for node in flow if node["type"] == "function")
    assert '{"state":"ON"}' in str(rule["func"])
    assert {node["qos"] for node in flow if node["type"] in ("mqtt in", "mqtt out")} == {"1"}
    json.dumps(flow)


def test_a_peer_process_gives_its_new_log_lines_once(tmp_path: Path) -> None:
    code = "import sys; print('warn one'); print('warn two'); sys.stdout.flush(); sys.stdin.readline()"
    proc = PeerProcess([sys.executable, "-c", code], tmp_path, {}, tmp_path / "peer.log")
    try:
        deadline = time.monotonic() + 30
        said: list[str] = []
        while len(said) < 2 and time.monotonic() < deadline:
            said += proc.new_output()
            time.sleep(0.05)
        assert said == ["warn one", "warn two"]
        assert proc.new_output() == []
    finally:
        proc.stop()
    assert not proc.alive()
