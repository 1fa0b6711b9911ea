"""The arm64 end to end (issue 15): ``edgegw run`` as a 64-bit Raspberry Pi runs it, under
qemu user-mode emulation, against the host's test-bed Mosquitto and Kafka.

``scripts/arm64 e2e`` runs it: it makes the emulated interpreter (Debian bookworm arm64's
python3.11 and the aarch64 wheels a Pi installs) and installs edgegw's wheel as
systemd/install.sh does; this process, on the host, starts the brokers, plays the fleet
and reads Kafka:

1. a simulated fleet (``bench.chaoslib.RuleRun``: each device publishes QoS 1 readings
   whose ``t`` crosses its rule's threshold on every other message) drives one rule per
   device, which sets the device's declared MQTT actuator on and off;
2. once the actuators got commands from the emulated gateway, it is SIGKILLed; the fleet
   publishes a backlog into the broker while it is down; it is started again and the
   fleet finishes;
3. after a clean stop (SIGTERM, exit 0) a ``read_committed`` consumer on the host reads the
   readings, events and commands topics, and they are compared one for one with the pure
   rules engine run over every message the broker acknowledged (``tests.gateway.exactness``,
   the comparison of the issue-11 test): each reading once, each fire and clear, each command.

Exit 0 when nothing is lost or duplicated, 1 otherwise (with the differences), 2 when the
run could not be made (a broker or the gateway did not start). It is not collected by
pytest (no ``test_`` prefix): the host suite must not need the arm64 root.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.chaoslib import (
    ChaosError,
    GatewayProc,
    KafkaWatch,
    MqttWatch,
    RuleRun,
    StreamPublisher,
    read_committed,
    settle,
)
from simulators.testbed import KafkaEndpoint, KafkaNode, Mosquitto, kafka_from_env
from tests.gateway.exactness import SHOW_DEVICES, compare, reference, tally

READY_WITHIN = 180.0
"""Seconds for an emulated start (imports run some 5-10x slower than natively)."""


@dataclass(frozen=True)
class Params:
    devices: int = 10
    messages: int = 2000
    rate: float = 200.0
    kill_after: int = 600
    """Kill once this many messages were sent (and the actuators got commands)."""
    backlog: int = 300
    """Messages published into the broker while the gateway is down."""


class EmulatedGateway(GatewayProc):
    """``edgegw run`` from the installed wheel (``APP/bin/edgegw``, what the unit's
    ``ExecStart=`` runs) in the emulated interpreter ``python``."""

    def __init__(self, run: RuleRun, python: Path, app: Path) -> None:
        super().__init__(run)
        self.python = python
        self.app = app

    def start(self, *, wait: bool = True, timeout: float = READY_WITHIN) -> float:
        env = {**os.environ, "PYTHONPATH": str(self.app), "PYTHONUNBUFFERED": "1"}
        for var in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM", "STATE_DIRECTORY"):
            env.pop(var, None)
        self._offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        began = time.monotonic()
        command = [str(self.python), str(self.app / "bin" / "edgegw"), "run",
                   "--config", str(self.run.config_path), "--log-format", "json"]  # fmt: skip
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=self.run.work, env=env,
            )  # fmt: skip
        self.starts += 1
        if not wait:
            return 0.0
        self.wait_log("ready", timeout=timeout)
        took = time.monotonic() - began
        self.ready_times.append(took)
        return took

    def machine(self) -> str:
        """What the kernel runs for the gateway (qemu) and what it runs (the arm64 python)."""
        if self.proc is None:
            return "-"
        try:
            exe = os.readlink(f"/proc/{self.proc.pid}/exe")
            argv = Path(f"/proc/{self.proc.pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return "?"
        return f"{Path(exe).name} running {argv[1].decode() if len(argv) > 1 else '?'}"


@contextlib.contextmanager
def brokers(work: Path) -> Iterator[tuple[Mosquitto, KafkaEndpoint]]:
    """A Mosquitto of this run, and ``EDGEGW_TEST_KAFKA`` or a Kafka node of this run."""
    with contextlib.ExitStack() as stack:
        broker = Mosquitto(work / "mosquitto")
        broker.start()
        stack.callback(broker.stop)
        kafka: KafkaEndpoint | None = kafka_from_env()
        if kafka is None:
            node = KafkaNode(work / "kafka")
            node.start(timeout=180)
            stack.callback(node.stop)
            kafka = node
        yield broker, kafka


def run_e2e(python: Path, app: Path, work: Path, params: Params) -> int:
    began = time.monotonic()
    with brokers(work) as (broker, kafka):
        run = RuleRun(work / "run", broker, kafka, devices=params.devices)
        print(f"brokers: mosquitto {broker.host}:{broker.port}, kafka {kafka.bootstrap} "
              f"({time.monotonic() - began:.0f} s)", flush=True)  # fmt: skip
        first_limit = params.kill_after + params.backlog
        pub = StreamPublisher(broker, run.message, params.messages, params.rate, limit=first_limit)
        watch = KafkaWatch(kafka.bootstrap, run.topics["readings"])  # to know when it settled
        actuators = MqttWatch(broker, f"{run.mqtt_prefix}/act/#")
        gateway = EmulatedGateway(run, python, app)
        try:
            actuators.start()
            watch.start()
            ready = [gateway.start()]
            print(f"gateway ready in {ready[0]:.1f} s: {gateway.machine()}", flush=True)
            life = time.monotonic()
            pub.start()
            deadline = time.monotonic() + 120
            while pub.sent < params.kill_after or not actuators.count_between(life, time.monotonic()):
                if not gateway.alive:
                    raise ChaosError(f"the gateway exited ({gateway.exit_code}):\n{gateway.tail()}")
                if time.monotonic() > deadline:
                    raise ChaosError(f"no command reached the actuators within 120 s:\n{gateway.tail()}")
                time.sleep(0.01)
            gateway.kill()
            killed = time.monotonic()
            commands_before = actuators.count_between(life, killed)
            recent = actuators.count_between(killed - 1.0, killed)
            print(f"SIGKILL at message {pub.sent:,}: {commands_before} commands on the actuators' topics "
                  f"before it ({recent} in its last second)", flush=True)  # fmt: skip
            while pub.sent < first_limit and pub.is_alive():  # the backlog, into the broker
                time.sleep(0.05)
            ready.append(gateway.start())
            print(f"restarted after a backlog of {pub.sent - params.kill_after:,} messages: "
                  f"ready in {ready[1]:.1f} s", flush=True)  # fmt: skip
            second_life = time.monotonic()
            pub.allow(params.messages)
            pub.join(params.messages / params.rate + 120)
            if pub.is_alive():
                raise ChaosError(f"the fleet did not finish: {pub.sent:,} of {params.messages:,} sent")
            commands_after = actuators.count_between(second_life, time.monotonic())
            acked = sorted(pub.acked_seqs())
            if len(acked) != params.messages:
                raise ChaosError(f"the broker acknowledged {len(acked):,} of {params.messages:,} messages")
            settle(watch, {(run.device(s), "seq", s): 0.0 for s in acked}, timeout=180)
            code = gateway.terminate(timeout=60)
            if code != 0:
                raise ChaosError(f"SIGTERM: the gateway exited with {code}:\n{gateway.tail()}")
        finally:
            pub.halt.set()
            gateway.kill()
            watch.stop()
            actuators.stop()
        topics = [read_committed(kafka.bootstrap, run.topics[k]) for k in ("readings", "events", "commands")]

    kafka_side = tally(run, *topics)
    expected = reference(run, acked)
    totals, problems = compare(expected, kafka_side)
    due = sum(sum(log.readings.values()) for log in expected.values())
    got = sum(len(log.readings) for log in kafka_side.devices.values())
    lost = sum(1 for device, log in expected.items() for k in log.readings
               if k not in kafka_side.devices[device].readings)  # fmt: skip
    duplicated = sum(n - 1 for log in kafka_side.devices.values() for n in log.readings.values() if n > 1)
    fires_due = sum(1 for log in expected.values() for kind, _ in log.events if kind == "fired")
    fires = sum(1 for log in kafka_side.devices.values() for kind, _ in log.events if kind == "fired")
    on_mqtt = Counter(payload.decode() for _topic, payload in actuators.messages)
    if not commands_after:
        problems.append("no command reached the actuators after the restart")
    print("reference (the pure engine over every acknowledged message) vs Kafka (read_committed):")
    print("\n".join(totals))
    print(f"  ce_id duplicates {kafka_side.ce_id_dups}; records of no known device {len(kafka_side.foreign)}")
    print(
        f"  commands the actuators got on MQTT: {dict(on_mqtt)} ({commands_before:,} before the "
        f"SIGKILL, {commands_after:,} once ready again; a command may come twice around a crash, "
        "and the hold queue drops the oldest when the gateway falls behind: docs/bridge.md)"
    )
    ok = not problems and not kafka_side.ce_id_dups and not kafka_side.foreign and lost == duplicated == 0
    print(f"arm64 e2e: {params.messages:,} messages from {params.devices} devices at {params.rate:g}/s, "
          f"1 SIGKILL (+{params.backlog} while down): readings {got:,} in Kafka of {due:,} due, "
          f"fires {fires:,} of {fires_due:,}, commands on MQTT {sum(on_mqtt.values()):,}, "
          f"lost {lost}, duplicated {duplicated + kafka_side.ce_id_dups}; ready in "
          f"{' / '.join(f'{r:.1f} s' for r in ready)}; {time.monotonic() - began:.0f} s in all: "
          f"{'PASSED' if ok else 'FAILED'}")  # fmt: skip
    if problems:
        print("problems (the first devices):\n" + "\n".join(problems[:SHOW_DEVICES]))
    if kafka_side.foreign:
        print(f"records of no known device: {kafka_side.foreign[:5]}")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--python", type=Path, required=True, help="the emulated interpreter (its wrapper)")
    parser.add_argument("--app", type=Path, required=True, help="edgegw installed from its wheel")
    parser.add_argument("--work", type=Path, required=True, help="a folder for brokers, config, spool, logs")
    defaults = Params()
    parser.add_argument("--devices", type=int, default=defaults.devices)
    parser.add_argument("--messages", type=int, default=defaults.messages)
    parser.add_argument("--rate", type=float, default=defaults.rate, help="messages per second")
    parser.add_argument("--kill-after", type=int, default=defaults.kill_after)
    parser.add_argument("--backlog", type=int, default=defaults.backlog)
    args = parser.parse_args(argv)
    params = Params(args.devices, args.messages, args.rate, args.kill_after, args.backlog)
    if params.kill_after + params.backlog >= params.messages:
        parser.error("--kill-after plus --backlog must leave messages for after the restart")
    args.work.mkdir(parents=True, exist_ok=True)
    try:
        return run_e2e(args.python, args.app, args.work, params)
    except ChaosError as exc:
        print(f"arm64 e2e could not run: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
