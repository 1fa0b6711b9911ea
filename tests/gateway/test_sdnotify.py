"""gateway.sdnotify against a real AF_UNIX datagram socket bound by the test, as systemd binds it."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from gateway.errors import PlatformError
from gateway.sdnotify import Notifier, watchdog_loop

ROOT = Path(__file__).resolve().parents[2]


class FakeSystemd:
    """The receiving end of $NOTIFY_SOCKET: a bound unix datagram socket."""

    def __init__(self, sock: socket.socket, env_value: str) -> None:
        self.sock = sock
        self.env = {"NOTIFY_SOCKET": env_value}

    def receive(self, timeout: float = 5.0) -> dict[str, str]:
        self.sock.settimeout(timeout)
        data = self.sock.recv(65536).decode()
        return dict(line.split("=", 1) for line in data.split("\n"))

    def pending(self) -> list[dict[str, str]]:
        """Every message waiting in the queue, without blocking."""
        messages = []
        self.sock.setblocking(False)
        try:
            while True:
                data = self.sock.recv(65536).decode()
                messages.append(dict(line.split("=", 1) for line in data.split("\n")))
        except BlockingIOError:
            pass
        return messages


@pytest.fixture
def systemd() -> Iterator[FakeSystemd]:
    # a short directory: unix socket paths are limited to 107 bytes, pytest's tmp_path may be longer
    with tempfile.TemporaryDirectory(prefix="sdn-") as directory:
        path = os.path.join(directory, "notify")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        yield FakeSystemd(sock, path)
        sock.close()


@pytest.fixture
def abstract_systemd() -> Iterator[FakeSystemd]:
    name = f"edgegw-test-{os.getpid()}-{time.monotonic_ns()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    yield FakeSystemd(sock, "@" + name)
    sock.close()


def test_ready_with_status(systemd: FakeSystemd) -> None:
    with Notifier(systemd.env) as notifier:
        assert notifier.enabled
        assert notifier.ready("mqtt connected, 12 rules") is True
    assert systemd.receive() == {"READY": "1", "STATUS": "mqtt connected, 12 rules"}


def test_abstract_namespace_socket(abstract_systemd: FakeSystemd) -> None:
    with Notifier(abstract_systemd.env) as notifier:
        notifier.ready()
    assert abstract_systemd.receive() == {"READY": "1"}


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (lambda n: n.watchdog(), {"WATCHDOG": "1"}),
        (lambda n: n.stopping(), {"STOPPING": "1"}),
        (lambda n: n.stopping("flushing spool"), {"STOPPING": "1", "STATUS": "flushing spool"}),
        (lambda n: n.status("uplink down,\nspooling"), {"STATUS": "uplink down, spooling"}),
        (lambda n: n.extend_timeout(90), {"EXTEND_TIMEOUT_USEC": "90000000"}),
        (lambda n: n.send("READY=1\nSTATUS=raw"), {"READY": "1", "STATUS": "raw"}),
    ],
    ids=["watchdog", "stopping", "stopping-status", "status-one-line", "extend-timeout", "raw"],
)
def test_messages(
    systemd: FakeSystemd, call: Callable[[Notifier], object], expected: dict[str, str]
) -> None:
    with Notifier(systemd.env) as notifier:
        call(notifier)
    assert systemd.receive() == expected


def test_reloading_carries_the_monotonic_time(systemd: FakeSystemd) -> None:
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    with Notifier(systemd.env) as notifier:
        notifier.reloading()
        notifier.ready()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    first = systemd.receive()
    assert first["RELOADING"] == "1"
    assert before <= int(first["MONOTONIC_USEC"]) <= after
    assert systemd.receive() == {"READY": "1"}


def test_no_op_outside_systemd() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    assert notifier.ready() is False
    assert notifier.watchdog() is False
    assert notifier.watchdog_interval is None
    assert notifier.ping_interval is None


def test_from_the_process_environment(systemd: FakeSystemd) -> None:
    """A child started with NOTIFY_SOCKET in its environment, as systemd starts ExecStart=."""
    code = "from gateway.sdnotify import Notifier; Notifier().ready('child')"
    env = {**os.environ, **systemd.env, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)
    assert systemd.receive() == {"READY": "1", "STATUS": "child"}


@pytest.mark.parametrize(
    ("env", "interval"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 30.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4242"}, 30.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # inherited from a parent
        ({}, None),
    ],
    ids=["no-pid", "our-pid", "other-pid", "unset"],
)
def test_watchdog_interval(env: dict[str, str], interval: float | None) -> None:
    notifier = Notifier(env, pid=4242)
    assert notifier.watchdog_interval == interval
    assert notifier.ping_interval == (None if interval is None else interval / 2)


@pytest.mark.parametrize(
    "env",
    [
        {"NOTIFY_SOCKET": "relative/path"},
        {"NOTIFY_SOCKET": "@"},
        {"NOTIFY_SOCKET": "vsock:2:1234"},
        {"WATCHDOG_USEC": "soon"},
        {"WATCHDOG_USEC": "0"},
        {"WATCHDOG_USEC": "1000", "WATCHDOG_PID": "me"},
    ],
)
def test_malformed_environment_is_a_platform_error(env: dict[str, str]) -> None:
    with pytest.raises(PlatformError):
        Notifier(env)


def test_a_vanished_socket_is_logged_and_counted_never_raised(tmp_path: Path) -> None:
    """Issue 11: one failed sendto raised PlatformError, and that stopped the gateway."""
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    with capture_logs() as logs:
        assert notifier.ready() is False
    notifier.close()
    assert notifier.errors == 1
    [entry] = [e for e in logs if e["event"] == "sd_notify failed"]
    assert entry["log_level"] == "warning"
    assert entry["message"] == "READY"
    assert "No such file" in entry["error"]


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_refused_notifies_are_counted_each_and_logged_at_most_once_a_minute(systemd: FakeSystemd) -> None:
    clock = _Clock()
    with Notifier(systemd.env, clock=clock) as notifier:
        assert notifier.ready() is True
        systemd.sock.close()  # systemd's end is gone, its path stays: ECONNREFUSED
        with capture_logs() as logs:
            sent = [notifier.watchdog() for _ in range(5)]
            clock.now += 30
            notifier.status("still here")
            clock.now += 31  # a minute after the first warning
            notifier.watchdog()
    assert sent == [False] * 5
    assert notifier.errors == 7
    warnings = [e for e in logs if e["event"] == "sd_notify failed"]
    assert [w.get("suppressed", 0) for w in warnings] == [0, 5]
    assert "Connection refused" in warnings[0]["error"]


async def test_the_watchdog_loop_outlives_a_refusing_socket(systemd: FakeSystemd) -> None:
    with Notifier({**systemd.env, "WATCHDOG_USEC": "20000"}) as notifier:
        systemd.sock.close()
        task = asyncio.create_task(watchdog_loop(notifier))
        for _ in range(1000):  # pings every 10 ms; a failed one used to end the loop
            if notifier.errors >= 3 or task.done():
                break
            await asyncio.sleep(0.005)
        assert not task.done(), "a failed ping ended the watchdog loop"
        assert notifier.errors >= 3
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_watchdog_loop_pings_from_the_event_loop(systemd: FakeSystemd) -> None:
    with Notifier({**systemd.env, "WATCHDOG_USEC": "20000"}) as notifier:  # 20 ms: pings every 10 ms
        assert notifier.ping_interval == 0.01
        task = asyncio.create_task(watchdog_loop(notifier))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    pings = systemd.pending()
    assert len(pings) >= 2
    assert all(p == {"WATCHDOG": "1"} for p in pings)


async def test_a_blocked_loop_sends_no_pings(systemd: FakeSystemd) -> None:
    """The point of pinging from the loop: while the loop is stuck, systemd hears nothing."""
    with Notifier({**systemd.env, "WATCHDOG_USEC": "20000"}) as notifier:
        task = asyncio.create_task(watchdog_loop(notifier))
        await asyncio.sleep(0)  # first ping
        systemd.pending()
        time.sleep(0.1)  # noqa: ASYNC251 - on purpose: a hung handler blocking the loop
        assert systemd.pending() == []
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_watchdog_loop_returns_without_a_watchdog() -> None:
    await asyncio.wait_for(watchdog_loop(Notifier({})), timeout=5)


def test_sending_after_close_is_a_platform_error(systemd: FakeSystemd) -> None:
    notifier = Notifier(systemd.env)
    notifier.close()
    notifier.close()  # twice is fine
    with pytest.raises(PlatformError, match="STOPPING sent after close"):
        notifier.stopping()
