"""`edgegw run` under the sandbox of systemd/edgegw.service: it works, and nothing is refused.

systemd is not running here, so the test plays it and traces the gateway with strace. It
starts the real ``edgegw run --config FILE`` (the virtualenv's console script, as
``ExecStart=`` does) the way the unit runs it: ``UMask=0077``, working directory ``/``,
the state directory mode 0700, a clean environment with ``STATE_DIRECTORY``,
``CONFIGURATION_DIRECTORY``, ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``JOURNAL_STREAM``.
It runs as the test's user, not as a stand-in for ``DynamicUser=``: the test's Python may
live in a private home (pyenv under /root) that another user cannot even execute.

The config has an MQTT device and a serial one (a pty), rules that command MQTT actuators,
the spool in the state directory (its default place), the HTTP listener, and a Kafka
uplink that is away (librdkafka starts its threads and is refused).

What a user would notice, against the test bed's real Mosquitto: READY=1 from the main
process; a reading in (MQTT, serial), the command out on the actuator's topic; ``/healthz``
200; the spool file in the state directory, private to the service; on SIGTERM,
STOPPING=1 and exit status 0.

And from the trace, that the unit's sandbox refuses none of it: every system call is in
``SystemCallFilter=``, every socket family in ``RestrictAddressFamilies=``, no mapping is
writable and executable at once (``MemoryDenyWriteExecute=``), files are written only where
``ProtectSystem=strict`` leaves room (the state directory, the private /tmp, /dev), nothing
under /home, /root or /run/user is touched (``ProtectHome=yes``; the interpreter's own
installation aside, /usr on a Pi), no other process's /proc entry is read
(``ProtectProc=invisible``), and no file access is refused.
What the trace cannot show (the device cgroup of ``DevicePolicy=``, namespaces) is
checked by ``systemd-analyze`` in test_unit.py.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from simulators.pty_device import PtyDevice
from simulators.testbed import Mosquitto, free_port
from tests.gateway.conftest import TopicWatch, publish
from tests.systemd.conftest import ROOT, UNIT

pytestmark = [
    pytest.mark.slow,
    pytest.mark.mqtt,
    pytest.mark.serial,
    pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed (optional)"),
    pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"),
]

EDGEGW = Path(sys.executable).with_name("edgegw")  # the console script, as in ExecStart=

# Refused on purpose, and handled: the read-only clock probe (gateway/timesync.py falls back
# to timesyncd's flag file). As root (the test), SQLite also chowns its -wal/-shm/-journal
# files to the database's owner; as the service's dynamic user it does not.
EXPECTED_REFUSALS = {"adjtimex", "clock_adjtime"}
ROOT_ONLY = {"fchown"}

# Python caches bytecode beside the code when it can; under ProtectSystem=strict it cannot,
# and goes on (install.sh compiles the virtualenv ahead).
BYTECODE = re.compile(r"/__pycache__/")

# ProtectHome=yes hides these. The one that holds this test's interpreter (a pyenv under
# /root, say; /usr on a Pi) cannot be checked: Python's start-up looks around its prefix.
HOMES = tuple(
    home for home in ("/home/", "/root/", "/run/user/")
    if not f"{Path(sys.base_prefix).resolve()}/".startswith(home)
)  # fmt: skip


# ---------------------------------------------------------------------- the unit's rules
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


def unit_setting(name: str) -> str:
    match = re.search(rf"^{name}=(.*)$", UNIT.read_text(), re.MULTILINE)
    assert match, f"{name}= is not in {UNIT}"
    return match.group(1).strip()


def _seconds(value: str) -> int:
    match = re.fullmatch(r"(\d+)(s|min)?", value)
    assert match, value
    return int(match.group(1)) * (60 if match.group(2) == "min" else 1)


# ---------------------------------------------------------------------- playing systemd
class NotifySocket:
    """The unit's notify socket; like systemd, it learns each sender's pid (SCM_CREDENTIALS)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(str(path))
        path.chmod(0o777)  # systemd's is writable by every service user
        self.messages: list[tuple[int, dict[str, str]]] = []

    def wait_for(
        self, key: str, timeout: float, alive: Callable[[], bool] = lambda: True
    ) -> tuple[int, dict[str, str]] | None:
        """The first (sender pid, message) carrying ``key``; None after ``timeout`` or once
        ``alive()`` turns false."""
        for pid, message in self.messages:
            if key in message:
                return pid, message
        deadline = time.monotonic() + timeout
        creds = struct.Struct("3i")  # struct ucred: pid, uid, gid
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(min(left, 0.5))
            try:
                data, ancillary, _flags, _addr = self.sock.recvmsg(65536, socket.CMSG_SPACE(creds.size))
            except TimeoutError:
                if not alive():
                    return None
                continue
            pid = -1
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = creds.unpack(payload[: creds.size])[0]
            message = dict(line.split("=", 1) for line in data.decode().split("\n") if "=" in line)
            self.messages.append((pid, message))
            if key in message:
                return pid, message
        return None

    def close(self) -> None:
        self.sock.close()


CONFIG = """\
gateway: {{id: {base}}}   # no state_dir: $STATE_DIRECTORY decides
mqtt: {{host: {mqtt_host}, port: {mqtt_port}}}
devices:
  - {{id: room, topic: {base}/room-sensor, profile: zigbee2mqtt}}
  - id: boiler
    transport: serial
    profile: kv
    serial: {{port: {serial_port}, baud: 115200, reconnect_min: 100ms, reconnect_max: 1s}}
actuators:
  - {{id: room/ac, profile: zigbee2mqtt, base_topic: {base}, name: room-ac}}
  - {{id: boiler/pump, profile: zigbee2mqtt, base_topic: {base}, name: boiler-pump}}
rules:
  - id: hot-room
    when: {{sensor: room/temperature, above: 26}}
    then: [{{set: room/ac, to: {{state: "ON"}}}}]
  - id: hot-boiler
    when: {{sensor: boiler/t, above: 80}}
    then: [{{set: boiler/pump, to: {{state: "ON"}}}}]
bridge:   # Kafka away (nothing listens there): librdkafka runs, and is refused
  kafka: {{bootstrap: "127.0.0.1:{kafka_port}", backoff_max: 2s}}
http: {{host: 127.0.0.1, port: {http_port}}}
log: {{level: info, format: json}}
"""


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # http to loopback
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


@dataclass
class SandboxRun:
    """What the test saw of one sandboxed run, and its strace output."""

    work: Path
    state: Path
    base: str  # this run's gateway id and the actuators' base topic
    trace: str = ""
    output: str = ""
    ready: tuple[int, dict[str, str]] | None = None
    main_pid: int | None = None
    commands: dict[str, list[Any]] = field(default_factory=dict)
    healthz: tuple[int, bytes] = (0, b"")
    spool: os.stat_result | None = None
    stopping: tuple[int, dict[str, str]] | None = None
    exit_code: int | None = None

    def describe(self) -> str:
        return "\n--- gateway output (last 40 lines)\n" + "\n".join(self.output.splitlines()[-40:])


def _service_env(run: SandboxRun, etc: Path, notify: NotifySocket) -> dict[str, str]:
    """What systemd gives the service, and nothing of the test's environment."""
    user = pwd.getpwuid(os.getuid()).pw_name
    return {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin",
        "LANG": "C.UTF-8",
        "HOME": "/",
        "LOGNAME": user,
        "USER": user,
        "STATE_DIRECTORY": str(run.state),
        "CONFIGURATION_DIRECTORY": str(etc),
        "NOTIFY_SOCKET": str(notify.path),
        "WATCHDOG_USEC": str(_seconds(unit_setting("WatchdogSec")) * 1_000_000),
        "JOURNAL_STREAM": "8:12345",
        "PYTHONPATH": str(ROOT),  # the code under test (the unit runs /opt/edgegw/venv)
    }


def _exercise(
    run: SandboxRun, mosquitto: Mosquitto, device: PtyDevice, watch: TopicWatch, http_port: int
) -> None:
    """What a user does with a running gateway: readings in, commands out, /healthz."""
    publish(mosquitto, [(f"{run.base}/room-sensor", {"temperature": 30.5})])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not watch.on(f"{run.base}/boiler-pump/set"):
        # the port may open after READY, and pyserial drops what came before: say it again
        device.write(b"t=85.5\n")
        time.sleep(0.5)
    for name in ("room-ac", "boiler-pump"):
        topic = f"{run.base}/{name}/set"
        try:
            run.commands[topic] = [m.json() for m in watch.wait_for(topic, timeout=30)]
        except AssertionError:
            run.commands[topic] = []
    run.healthz = _get(f"http://127.0.0.1:{http_port}/healthz")
    spool = run.state / "spool.db"
    run.spool = spool.stat() if spool.exists() else None


@pytest.fixture(scope="module")
def run(mosquitto: Mosquitto, tmp_path_factory: pytest.TempPathFactory) -> SandboxRun:
    """One run of ``edgegw run`` under strace, played as systemd would start and stop it."""
    if not EDGEGW.exists():
        pytest.skip(f"{EDGEGW} is not installed (pip install -e .)")
    work = tmp_path_factory.mktemp("sandbox")
    run = SandboxRun(work=work, state=work / "var" / "lib" / "edgegw", base=f"sandbox-{secrets.token_hex(3)}")
    run.state.mkdir(parents=True)  # StateDirectory=edgegw
    run.state.chmod(0o700)  # StateDirectoryMode=0700
    etc = work / "etc" / "edgegw"  # ConfigurationDirectory=edgegw
    etc.mkdir(parents=True)
    serial_port = work / "dev" / "serial" / "by-id" / "usb-edgegw_boiler-if00-port0"
    http_port = free_port()
    config = etc / "edgegw.yaml"
    config.write_text(
        CONFIG.format(
            base=run.base, mqtt_host=mosquitto.host, mqtt_port=mosquitto.port, serial_port=serial_port,
            kafka_port=free_port(), http_port=http_port,
        )
    )  # fmt: skip
    (work / "run" / "systemd").mkdir(parents=True)
    notify = NotifySocket(work / "run" / "systemd" / "notify")
    watch = TopicWatch(mosquitto, [f"{run.base}/+/set"])
    device = PtyDevice(serial_port).plug()
    trace = work / "trace"
    with (work / "output.log").open("w") as output:
        process = subprocess.Popen(
            ["strace", "-f", "-qq", "-o", str(trace), str(EDGEGW), "run", "--config", str(config)],
            env=_service_env(run, etc, notify), cwd="/", umask=int(unit_setting("UMask"), 8),
            stdout=output, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def alive() -> bool:
        return process.poll() is None

    try:
        run.ready = notify.wait_for("READY", timeout=120, alive=alive)
        children = _children(process.pid)  # strace's one child is the gateway: the unit's main process
        run.main_pid = children[0] if len(children) == 1 else None
        if run.ready is not None:
            _exercise(run, mosquitto, device, watch, http_port)
            os.kill(run.ready[0], signal.SIGTERM)  # systemd signals the main process
            run.stopping = notify.wait_for("STOPPING", timeout=30, alive=alive)
        run.exit_code = process.wait(timeout=60)  # strace exits with the gateway's status
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        watch.close()
        device.close()
        notify.close()
        run.output = (work / "output.log").read_text(errors="replace")
        run.trace = trace.read_text(errors="replace") if trace.exists() else ""
    return run


# ---------------------------------------------------------------------- what a user notices
def test_the_gateway_works_under_the_unit(run: SandboxRun) -> None:
    assert run.ready is not None, "no READY=1" + run.describe()
    pid, _ = run.ready
    assert run.main_pid is not None
    assert pid == run.main_pid, "READY=1 must come from the main process (NotifyAccess=main)"
    assert run.commands == {
        f"{run.base}/room-ac/set": [{"state": "ON"}],  # an MQTT reading drove it
        f"{run.base}/boiler-pump/set": [{"state": "ON"}],  # a serial one
    }, run.describe()
    status, body = run.healthz
    assert status == 200, body.decode(errors="replace") + run.describe()
    assert json.loads(body)["status"] == "ok"  # Kafka being away does not make it unhealthy
    assert run.spool is not None, f"no spool.db in the state directory {run.state}" + run.describe()
    assert run.spool.st_mode & 0o077 == 0, f"spool mode {oct(run.spool.st_mode)}: UMask=0077 keeps it private"
    assert run.stopping is not None, "no STOPPING=1 after SIGTERM" + run.describe()
    assert run.stopping[0] == pid
    assert run.exit_code == 0, run.describe()


# ---------------------------------------------------------------------- what the sandbox allows
_LINE = re.compile(r"^(\d+)\s+([a-z_0-9]+)\((.*)$")


def _calls(trace: str) -> Iterator[tuple[int, str, str]]:
    """(pid, system call, the rest of the line) of each call strace saw start."""
    for line in trace.splitlines():
        match = _LINE.match(line)
        if match:
            yield int(match.group(1)), match.group(2), match.group(3)


def _syscalls(trace: str) -> set[str]:
    return {name for _pid, name, _rest in _calls(trace)}


def test_every_system_call_is_in_the_filter(run: SandboxRun) -> None:
    used = _syscalls(run.trace)
    assert {"openat", "sendto", "mmap", "execve"} <= used, "the trace did not parse"
    outside = used - allowed_syscalls(UNIT.read_text()) - EXPECTED_REFUSALS
    if os.geteuid() == 0:
        outside -= ROOT_ONLY
    assert outside == set(), f"the unit's SystemCallFilter= would refuse: {sorted(outside)}"


def test_socket_families_are_allowed(run: SandboxRun) -> None:
    families = set(re.findall(r"\bsocket(?:pair)?\((AF_[A-Z0-9]+)", run.trace))
    assert {"AF_INET", "AF_UNIX"} <= families
    # glibc's getaddrinfo() asks netlink which families are configured and, refused, tries both
    outside = families - allowed_families(UNIT.read_text()) - {"AF_NETLINK"}
    assert outside == set(), f"RestrictAddressFamilies= would refuse: {sorted(outside)}"


def test_no_writable_and_executable_memory(run: SandboxRun) -> None:
    both = re.compile(r"PROT_WRITE\|PROT_EXEC|PROT_EXEC\|PROT_WRITE")
    wx = [line for line in run.trace.splitlines() if both.search(line)]
    assert wx == [], "MemoryDenyWriteExecute= would refuse:\n" + "\n".join(wx[:5])


_OPEN = re.compile(r'^(?:AT_FDCWD, )?"([^"]*)", ([A-Z_|0-9]+)')
_WRITES_PATHS = {"mkdir", "mkdirat", "unlink", "unlinkat", "rmdir", "rename", "renameat", "renameat2",
                 "link", "linkat", "truncate", "chmod", "fchmodat", "chown", "lchown", "fchownat",
                 "utimensat", "mknod", "mknodat"}  # fmt: skip
_FAILED = re.compile(r"= -1 (EACCES|EPERM|EROFS) ")


def _written(trace: str) -> list[str]:
    """Paths opened for writing, created, renamed, removed or changed."""
    out: list[str] = []
    for _pid, name, rest in _calls(trace):
        if name in ("open", "openat", "creat"):
            match = _OPEN.match(rest)
            if match and (name == "creat" or re.search(r"O_WRONLY|O_RDWR|O_CREAT|O_TRUNC", match.group(2))):
                out.append(match.group(1))
        elif name in _WRITES_PATHS or name == "symlink" or name == "symlinkat":
            paths = re.findall(r'"([^"]*)"', rest)
            out += paths[1:] if name.startswith("symlink") else paths
    return out


def test_files_are_written_only_where_the_unit_allows(run: SandboxRun) -> None:
    """ProtectSystem=strict: the state directory, the private /tmp and /var/tmp, /dev (the
    serial port's by-id link is in the test's stand-in for /dev)."""
    assert run.trace, "no trace"
    state = f"{run.state}/"
    allowed = (state, f"{run.work}/dev/")
    bad = sorted({
        path for path in _written(run.trace)
        if not BYTECODE.search(path)
        and not (path + "/").startswith(allowed)
        and (path.startswith(f"{run.work}/") or not path.startswith(("/tmp/", "/var/tmp/", "/dev/")))
    })  # fmt: skip
    assert bad == [], f"outside the state directory, ProtectSystem=strict would refuse: {bad}"
    assert any(p.startswith(state) for p in _written(run.trace)), "the trace shows no spool writes"


def test_nothing_private_is_touched(run: SandboxRun) -> None:
    """ProtectHome=yes hides /home, /root and /run/user; ProtectProc=invisible hides other
    processes; and no file access is refused (EACCES, EPERM, EROFS)."""
    pids = {pid for pid, _name, _rest in _calls(run.trace)}
    home, other_proc, refused = set(), set(), []
    for pid, name, rest in _calls(run.trace):
        for path in re.findall(r'"(/[^"]*)"', rest):
            if (path + "/").startswith(HOMES):
                home.add(f"{name} {path}")
            proc = re.match(r"/proc/(\d+)(/|$)", path)
            if proc and int(proc.group(1)) not in pids:
                other_proc.add(f"{name} {path}")
        failed = _FAILED.search(rest)
        if failed and name not in EXPECTED_REFUSALS and not BYTECODE.search(rest):
            refused.append(f"[{pid}] {name}({rest}")
    assert home == set(), f"ProtectHome=yes would hide: {sorted(home)}"
    assert other_proc == set(), f"ProtectProc=invisible would hide: {sorted(other_proc)}"
    assert refused == [], "refused for want of permission:\n" + "\n".join(refused[:10])
