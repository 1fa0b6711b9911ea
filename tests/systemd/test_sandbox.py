"""The sandbox of systemd/edgegw.service does not break what the gateway does.

systemd itself is not running here, so this traces a representative workload
(tests/systemd/sandbox_workload.py: SQLite WAL spool, paho and aiomqtt against the real
test Mosquitto, a librdkafka producer, pyserial on a pty, the metrics listener, the clock
probe, sd_notify) with strace and checks it against the unit: every system call is in
the unit's SystemCallFilter=, every socket family in RestrictAddressFamilies=, and no
mapping is writable and executable at once (MemoryDenyWriteExecute=).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

from simulators.testbed import Mosquitto
from tests.systemd.conftest import ROOT, UNIT

pytestmark = [
    pytest.mark.slow,
    pytest.mark.mqtt,
    pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed (optional)"),
    pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"),
]

WORKLOAD = Path(__file__).with_name("sandbox_workload.py")

# Refused on purpose, and handled: the read-only clock probe (gateway/timesync.py falls back
# to timesyncd's flag file), and glibc's getaddrinfo() netlink query (it then assumes both
# IPv4 and IPv6). As root (the test), SQLite also chowns its -wal/-shm/-journal files to the
# database's owner; as the service's dynamic user it does not.
EXPECTED_REFUSALS = {"adjtimex", "clock_adjtime"}
ROOT_ONLY = {"fchown"}


@cache
def _group(name: str) -> frozenset[str]:
    out = subprocess.run(
        ["systemd-analyze", "syscall-filter", name], capture_output=True, text=True, check=True
    ).stdout
    calls: set[str] = set()
    for raw in out.splitlines()[1:]:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        calls |= _group(line) if line.startswith("@") else {line}
    return frozenset(calls)


def _names(words: str) -> set[str]:
    out: set[str] = set()
    for word in words.split():
        out |= _group(word) if word.startswith("@") else {word}
    return out


def allowed_syscalls(unit_text: str) -> set[str]:
    """SystemCallFilter= lines in order: the first allow list, then ~ removes, others add."""
    allowed: set[str] = set()
    for line in unit_text.splitlines():
        if not line.startswith("SystemCallFilter="):
            continue
        value = line.split("=", 1)[1]
        if value.startswith("~"):
            allowed -= _names(value[1:])
        else:
            allowed |= _names(value)
    if re.search(r"^ProtectClock=yes", unit_text, re.MULTILINE):
        allowed -= _group("@clock")
    return allowed


def allowed_families(unit_text: str) -> set[str]:
    match = re.search(r"^RestrictAddressFamilies=(.*)$", unit_text, re.MULTILINE)
    assert match
    return set(match.group(1).split())


@pytest.fixture(scope="module")
def trace(mosquitto: Mosquitto, tmp_path_factory: pytest.TempPathFactory) -> str:
    work = tmp_path_factory.mktemp("sandbox")
    out = work / "trace"
    state = work / "state"
    state.mkdir()
    result = subprocess.run(
        ["strace", "-f", "-qq", "-o", str(out), sys.executable, str(WORKLOAD),
         mosquitto.host, str(mosquitto.port), str(state)],
        capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "workload done" in result.stdout
    return out.read_text()


def _syscalls(trace: str) -> set[str]:
    names = set()
    for line in trace.splitlines():
        match = re.match(r"^(?:\[pid\s+)?\d+\]?\s+([a-z_0-9]+)\(", line)
        if match:
            names.add(match.group(1))
    return names


def test_every_system_call_is_in_the_filter(trace: str) -> None:
    used = _syscalls(trace)
    assert {"openat", "sendto", "mmap"} <= used  # the trace parsed
    outside = used - allowed_syscalls(UNIT.read_text()) - EXPECTED_REFUSALS
    if os.geteuid() == 0:
        outside -= ROOT_ONLY
    assert outside == set(), f"the unit's SystemCallFilter= would refuse: {sorted(outside)}"


def test_socket_families_are_allowed(trace: str) -> None:
    families = set(re.findall(r"\bsocket(?:pair)?\((AF_[A-Z0-9]+)", trace))
    assert {"AF_INET", "AF_UNIX"} <= families
    outside = families - allowed_families(UNIT.read_text()) - {"AF_NETLINK"}
    assert outside == set(), f"RestrictAddressFamilies= would refuse: {sorted(outside)}"


def test_no_writable_and_executable_memory(trace: str) -> None:
    both = re.compile(r"PROT_WRITE\|PROT_EXEC|PROT_EXEC\|PROT_WRITE")
    wx = [line for line in trace.splitlines() if both.search(line)]
    assert wx == [], "MemoryDenyWriteExecute= would refuse:\n" + "\n".join(wx[:5])
