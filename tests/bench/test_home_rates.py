"""The pure parts of ``bench.home_rates``: the command line, the rows, the report. No broker."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.home_rates import KINDS, Phase, Variant, parse_args, report, row_name


def test_peers_chooses_rows() -> None:
    assert parse_args([]).kinds == list(KINDS)
    args = parse_args(["--peers", "bare, edgegw-eos", "--rates", "100,1000"])
    assert args.kinds == ["bare", "edgegw-eos"]
    assert args.rates == [100, 1000]
    assert not args.otherwise
    assert args.log_level == "info"
    with pytest.raises(SystemExit):
        parse_args(["--peers", "mosquitto"])


def test_row_names() -> None:
    assert row_name(("after", "edgegw-eos")) == ("edgegw after", "spool + exactly-once Kafka")
    assert row_name(("before", "edgegw-spool")) == ("edgegw before", "spool")
    assert row_name(("-", "nodered")) == ("Node-RED 4.1", "-")


def test_the_report_has_a_line_per_row_and_phase() -> None:
    args = parse_args(["--rates", "100", "--peers", "edgegw-spool,bare"])
    idle = Phase(readings=0, seconds=60, cpu=0.3, wakeups=300, rss=45.5)
    busy = Phase(readings=2000, seconds=20, cpu=0.8, write_bytes=8000, payload_bytes=80_000, wakeups=4000,
                 commits=170, p50=0.8, p99=1.6, seen=100, sent=100, durable_p50=100.0, durable_p99=104.0,
                 threads={"event loop": 0.5, "edgegw-spool": 0.3})  # fmt: skip
    bare_busy = Phase(readings=2000, seconds=20, cpu=0.2, payload_bytes=80_000, wakeups=2000, p50=0.3,
                      p99=0.9, seen=100, sent=100, threads={"event loop": 0.2})  # fmt: skip
    results = {
        ("after", "edgegw-spool"): [{"idle": idle, "100": busy}],
        ("-", "bare"): [{"idle": Phase(seconds=60, cpu=0.06, wakeups=60, rss=22.5), "100": bare_busy}],
    }
    text = report(results, args, [Variant("after", Path("."), "python")], (0.5, 1.0),
                  ["- **Node-RED 4.1: not run**: node is not installed"])  # fmt: skip
    assert "| edgegw after | spool | idle | - | 0.30 | 5 | 0 B/s | 45.5 | n/a | - | n/a | - |" in text
    edgegw = "| edgegw after | spool | 100/s | 0.400 | 2.40 | 200 | 4 (0.1x) | - | 8.5 | 0.80 / 1.60 |"
    assert f"{edgegw} 100.0 / 104.0 | 100/100 |" in text
    assert "| bare paho subscriber | - | idle | - | 0.06 | 1 | 0 B/s | 22.5 | n/a | - | n/a | - |" in text
    bare = "| bare paho subscriber | - | 100/s | 0.100 | 0.60 | 100 | 0 (0.0x) | - | n/a | 0.30 / 0.90 |"
    assert f"{bare} n/a | 100/100 |" in text
    assert "Node-RED 4.1: not run" in text
    assert "- edgegw after, spool, 100/s: edgegw-spool 0.150, event loop 0.250" in text
    assert "- bare paho subscriber, 100/s: event loop 0.100" in text
