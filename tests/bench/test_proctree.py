"""bench.proctree: the /proc parsers on fixture text, and the tree readers on a fixture
/proc directory (pure: no process is read but the fixtures), plus one live tree."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import proctree
from bench.proctree import (
    Sample,
    StatTimes,
    children,
    cpu_seconds,
    descendants,
    parse_io,
    parse_stat,
    parse_status,
    rss_mib,
    sample,
    status_kib,
    thread_cpu,
    thread_label,
    wakeups,
    write_bytes,
)

TICK = proctree.TICK


def stat_line(pid: int, comm: str, utime: int, stime: int, cutime: int = 0, cstime: int = 0) -> str:
    return (
        f"{pid} ({comm}) S 1 {pid} {pid} 0 -1 4194560 1234 0 0 0 {utime} {stime} {cutime} {cstime} "
        "20 0 3 0 12345 123456789 4000 18446744073709551615 1 1 0 0 0 0 0 16781312 17154 0 0 0 17 1 0 0 0\n"
    )


def status_text(name: str, rss_kb: int | None, voluntary: int, involuntary: int) -> str:
    rss = f"VmHWM:\t   {rss_kb + 100} kB\nVmRSS:\t   {rss_kb} kB\n" if rss_kb is not None else ""
    return (
        f"Name:\t{name}\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t1\nPid:\t1\n{rss}"
        f"Threads:\t1\nvoluntary_ctxt_switches:\t{voluntary}\nnonvoluntary_ctxt_switches:\t{involuntary}\n"
    )


IO = (
    "rchar: 1000\nwchar: 2000\nsyscr: 10\nsyscw: 20\nread_bytes: 4096\n"
    "write_bytes: {wb}\ncancelled_write_bytes: 0\n"
)


def fake_process(
    proc: Path, pid: int, comm: str, threads: dict[int, tuple[str, int, int, int, int]], *,
    kids: tuple[int, ...] = (), reaped: tuple[int, int] = (0, 0), rss_kb: int | None = 1024, wb: int = 0,
) -> None:  # fmt: skip
    """A /proc/<pid> with its threads: {tid: (comm, utime, stime, voluntary, involuntary)}."""
    root = proc / str(pid)
    (root / "task").mkdir(parents=True)
    own = [0, 0]
    for k, (tid, (tcomm, ut, st, vol, invol)) in enumerate(threads.items()):
        task = root / "task" / str(tid)
        task.mkdir()
        (task / "stat").write_text(stat_line(tid, tcomm, ut, st))
        (task / "status").write_text(status_text(tcomm, rss_kb, vol, invol))
        (task / "children").write_text(" ".join(map(str, kids)) + " " if k == 0 and kids else "")
        own[0] += ut
        own[1] += st
    (root / "stat").write_text(stat_line(pid, comm, own[0], own[1], *reaped))
    (root / "status").write_text(status_text(comm, rss_kb, 1, 1))
    (root / "io").write_text(IO.format(wb=wb))


@pytest.fixture
def proc(tmp_path: Path) -> Path:
    """A gateway (100) with an event loop, a spool thread and two librdkafka threads; its
    uplink child (200, a thread of its own) and a grandchild (300) that is gone but listed."""
    proc = tmp_path / "proc"
    fake_process(proc, 100, "python", {
        100: ("python", 300, 100, 50, 5),
        101: ("edgegw-spool", 40, 60, 400, 10),
        102: ("rdk:main", 5, 5, 30, 0),
        103: ("rdk:broker1", 10, 0, 20, 1),
    }, kids=(200,), reaped=(7, 3), rss_kb=40 * 1024, wb=8192)  # fmt: skip
    fake_process(proc, 200, "python3.11", {200: ("python3.11", 100, 50, 10, 2)}, kids=(300,),
                 rss_kb=20 * 1024, wb=4096)  # fmt: skip
    return proc


def test_parse_stat_counts_fields_after_the_last_parenthesis() -> None:
    times = parse_stat(stat_line(42, "weird ) name (x", 11, 22, 33, 44))
    assert times == StatTimes("weird ) name (x", 11, 22, 33, 44)
    assert (times.own, times.reaped) == (33, 77)


@pytest.mark.parametrize("text", ["", "no parenthesis here", "1 (x) S 1 2 3"])
def test_parse_stat_refuses_what_is_not_a_stat_line(text: str) -> None:
    with pytest.raises(ValueError, match="stat line"):
        parse_stat(text)


def test_parse_status_and_its_numbers() -> None:
    status = parse_status(status_text("node", 2048, 7, 3))
    assert status["Name"] == "node"
    assert status_kib(status, "VmRSS") == 2048
    assert status_kib(status, "voluntary_ctxt_switches") == 7
    assert status_kib(status, "nonvoluntary_ctxt_switches") == 3
    assert status_kib(parse_status(status_text("kworker", None, 0, 0)), "VmRSS") == 0


def test_parse_io() -> None:
    got = parse_io(IO.format(wb=12345) + "garbage line\nodd: x\n")
    assert got["write_bytes"] == 12345
    assert got["rchar"] == 1000
    assert "odd" not in got


def test_thread_labels() -> None:
    assert thread_label("rdk:broker1") == "librdkafka"
    assert thread_label("python") == "event loop"
    assert thread_label("python3.11") == "event loop"
    assert thread_label("edgegw-spool") == "edgegw-spool"
    assert thread_label("node") == "node"


def test_the_tree_of_a_fixture_proc(proc: Path) -> None:
    assert children(100, proc) == [200]
    assert descendants(100, proc) == [100, 200, 300]  # 300 is listed but gone: skipped when read
    assert descendants(200, proc) == [200, 300]
    assert children(999, proc) == []


def test_tree_figures_of_a_fixture_proc(proc: Path) -> None:
    assert cpu_seconds(100, proc) == pytest.approx(
        (300 + 100 + 40 + 60 + 5 + 5 + 10 + 0 + 7 + 3 + 150) / TICK
    )
    assert cpu_seconds(100, proc, tree=False) == pytest.approx(520 / TICK)
    assert rss_mib(100, proc) == {"main": 40.0, "python3.11": 20.0}
    assert wakeups(100, proc) == (55 + 410 + 30 + 21) + 12
    assert write_bytes(100, proc) == 8192 + 4096
    threads = thread_cpu(100, proc)
    assert threads == pytest.approx({
        "event loop": (400 + 150) / TICK, "edgegw-spool": 100 / TICK, "librdkafka": 20 / TICK,
    })  # fmt: skip
    assert thread_cpu(100, proc, tree=False)["event loop"] == pytest.approx(400 / TICK)


def test_a_sample_of_an_interval(proc: Path) -> None:
    before = sample(100, proc)
    threads = {**before.threads, "edgegw-spool": before.threads["edgegw-spool"] + 0.5, "new": 0.25}
    later = Sample(before.cpu + 1.5, before.wakeups + 10, before.write_bytes + 100, {"main": 41.0}, threads)
    delta = later - before
    assert delta.cpu == pytest.approx(1.5)
    assert (delta.wakeups, delta.write_bytes) == (10, 100)
    assert delta.rss == {"main": 41.0}
    assert delta.rss_total == 41.0
    assert delta.threads["edgegw-spool"] == pytest.approx(0.5)
    assert delta.threads["new"] == 0.25
    assert delta.threads["librdkafka"] == 0.0


def test_a_live_tree_counts_its_child(tmp_path: Path) -> None:
    """A peer's CPU and memory include its child processes (edgegw's uplink)."""
    marker = tmp_path / "child-started"
    code = (
        "import subprocess, sys, time; "
        "c = subprocess.Popen(['sleep', '60']); "
        f"open({str(marker)!r}, 'w').close(); c.wait()"
    )
    parent = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 30
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        tree = descendants(parent.pid)
        assert len(tree) == 2
        assert tree[0] == parent.pid
        got = sample(parent.pid)
        assert set(got.rss) == {"main", "sleep"}
        assert got.cpu >= 0.0
        assert got.wakeups > 0
    finally:
        for pid in reversed(descendants(parent.pid)):
            subprocess.run(["kill", str(pid)], check=False)
        parent.wait(timeout=10)
