"""Issue 11: rule events and commands reach Kafka exactly once across SIGKILLs.

A black-box run of the real gateway (``python -m gateway run`` as a subprocess) against
the test-bed Mosquitto and Kafka: 20 devices publish QoS 1 readings whose ``t`` alternates
below / above a rule threshold, so each device's rule fires on every second reading and
clears on the next one (commands ``on`` / ``off`` to a declared MQTT actuator). The
gateway is SIGKILLed 10 times at seeded random points of the stream, each time while
commands are flowing (checked on the actuators' MQTT topics), and restarted.

What should be in Kafka comes from an uninterrupted run over the same readings: each
message the broker acknowledged, in publish order, fed to the pure ``rules.RuleEngine``
with the rules loaded from the same config file as the gateway loads them. After the
stream settled and a final clean stop, a read_committed consumer reads the readings,
events and commands topics from the beginning, and the test compares per device, one
for one: each acknowledged reading once, the sequence of fired / cleared events (each
named by the reading that decided it) and the sequence of commands per actuator.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bench.chaoslib import (
    GatewayProc,
    KafkaWatch,
    MqttWatch,
    RuleRun,
    StreamPublisher,
    TopicRecord,
    read_committed,
    settle,
)
from gateway.config import load_config
from gateway.model import Command, Event, Reading
from rules import Now, RuleEngine
from simulators.testbed import KafkaEndpoint, Mosquitto

pytestmark = [pytest.mark.mqtt, pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(300)]

DEVICES = 20
MESSAGES = 12_000
RATE = 1500.0
KILLS = 10
SEED = 11
LIFE_MAX = 800
BACKLOG_MAX = 800
SHOW_DEVICES = 6
SHOW_ITEMS = 6

EventItem = tuple[str, int]  # (kind, seq of the reading that decided it)


@dataclass
class DeviceLog:
    """What one device's stream produced, in order."""

    readings: Counter[tuple[str, int]] = field(default_factory=Counter)  # (metric, seq) -> times
    events: list[EventItem] = field(default_factory=list)
    commands: dict[str, list[str]] = field(default_factory=dict)  # actuator -> payloads (JSON) in order


def _canon(payload: object) -> str:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"))


# ---------------------------------------------------------------------- the reference run
def _reference(run: RuleRun, seqs: list[int]) -> dict[str, DeviceLog]:
    """The uninterrupted run: the messages ``seqs`` (in publish order) through the pure engine."""
    loaded = load_config(run.config_path)  # the rules exactly as `edgegw run` loads them
    engine = RuleEngine(loaded.rules, Now(0.0, 0.0))
    rule_device = run.rule_device()
    out = {run.device(i): DeviceLog() for i in range(run.devices)}
    for step, seq in enumerate(seqs):
        device = run.device(seq)
        log = out[device]
        now = Now(float(step) / RATE, 1.7e9 + step / RATE)
        readings = [Reading(device, "seq", float(seq), now.wall, now.wall),
                    Reading(device, "t", run.t_value(seq), now.wall, now.wall)]  # fmt: skip
        for reading in readings:
            log.readings[(reading.metric, seq)] += 1
            for action in engine.on_reading(reading, now):
                if isinstance(action, Event):
                    owner = out[rule_device[action.rule_id]]
                    owner.events.append((str(action.kind), _decided_by(run, action.values)))
                elif isinstance(action, Command):
                    owner = out[action.actuator.split("/", 1)[0]]
                    owner.commands.setdefault(action.actuator, []).append(_canon(dict(action.payload)))
    return out


def _decided_by(run: RuleRun, values: object) -> int:
    if isinstance(values, dict):
        for sensor, value in values.items():
            if str(sensor).endswith("/t") and isinstance(value, int | float):
                return run.seq_of_t(float(value))
    return -1


# ---------------------------------------------------------------------- what Kafka holds
@dataclass
class KafkaTally:
    devices: dict[str, DeviceLog]
    foreign: list[str] = field(default_factory=list)
    ce_id_dups: int = 0


def _tally(run: RuleRun, readings: list[TopicRecord], events: list[TopicRecord],
           commands: list[TopicRecord]) -> KafkaTally:  # fmt: skip
    out = KafkaTally({run.device(i): DeviceLog() for i in range(run.devices)})
    rule_device = run.rule_device()
    ce_ids: Counter[bytes] = Counter()
    for rec in readings:
        ce_ids[rec.headers.get("ce_id", b"")] += 1
        data = json.loads(rec.value)
        device, metric, value = data.get("device_id"), data.get("metric"), data.get("value")
        log = out.devices.get(str(device))
        if log is None or not isinstance(value, int | float):
            out.foreign.append(f"readings: {data}")
            continue
        seq = int(value) if metric == "seq" else run.seq_of_t(float(value))
        log.readings[(str(metric), seq)] += 1
    for rec in events:
        ce_ids[rec.headers.get("ce_id", b"")] += 1
        data = json.loads(rec.value)
        owner = rule_device.get(str(data.get("rule_id")))
        if owner is None:
            out.foreign.append(f"events: {data}")
            continue
        out.devices[owner].events.append((str(data.get("kind")), _decided_by(run, data.get("values"))))
    for rec in commands:
        ce_ids[rec.headers.get("ce_id", b"")] += 1
        data = json.loads(rec.value)
        actuator = str(data.get("actuator"))
        log = out.devices.get(actuator.split("/", 1)[0])
        if log is None:
            out.foreign.append(f"commands: {data}")
            continue
        log.commands.setdefault(actuator, []).append(_canon(data.get("payload")))
    out.ce_id_dups = sum(n - 1 for n in ce_ids.values() if n > 1)
    return out


# ---------------------------------------------------------------------- the comparison
def _first_difference(want: list[object], got: list[object]) -> str:
    n = next((i for i, (a, b) in enumerate(zip(want, got, strict=False)) if a != b), min(len(want), len(got)))
    lo = max(0, n - 1)
    return (f"first difference at #{n} (of {len(want)} due, {len(got)} in Kafka): "
            f"due {want[lo:n + SHOW_ITEMS]} got {got[lo:n + SHOW_ITEMS]}")  # fmt: skip


def _compare(expected: dict[str, DeviceLog], kafka: KafkaTally) -> tuple[list[str], list[str]]:
    """``(totals lines, per-device problem lines)``; no problem lines means one for one."""
    tot: Counter[str] = Counter()
    problems: list[str] = []
    for device, want in expected.items():
        got = kafka.devices[device]
        lines: list[str] = []
        missing = [k for k in want.readings if k not in got.readings]
        dup = {k: n - 1 for k, n in got.readings.items() if n > 1}
        extra = [k for k in got.readings if k not in want.readings]
        tot["readings due (seq and t)"] += sum(want.readings.values())
        tot["readings in Kafka (distinct)"] += sum(1 for k in got.readings if k in want.readings)
        tot["readings missing"] += len(missing)
        tot["readings duplicated"] += sum(dup.values())
        tot["readings not acknowledged"] += len(extra)
        if missing or dup:
            lines.append(f"readings: {len(missing)} missing {sorted(missing)[:SHOW_ITEMS]}, "
                         f"{sum(dup.values())} duplicated {sorted(dup)[:SHOW_ITEMS]}")  # fmt: skip
        for kind in ("fired", "cleared"):
            tot[f"{kind} due"] += sum(1 for k, _ in want.events if k == kind)
            tot[f"{kind} in Kafka"] += sum(1 for k, _ in got.events if k == kind)
        want_ev, got_ev = Counter(want.events), Counter(got.events)
        tot["events missing"] += sum((want_ev - got_ev).values())
        tot["events duplicated or extra"] += sum((got_ev - want_ev).values())
        if want.events != got.events:
            lines.append(f"events: {_first_difference(list(want.events), list(got.events))}; "
                         f"missing {sorted(want_ev - got_ev)[:SHOW_ITEMS]}, "
                         f"extra {sorted(got_ev - want_ev)[:SHOW_ITEMS]}")  # fmt: skip
        for actuator in sorted(set(want.commands) | set(got.commands)):
            w, g = want.commands.get(actuator, []), got.commands.get(actuator, [])
            for payload, n in Counter(w).items():
                tot[f"commands {payload} due"] += n
            for payload, n in Counter(g).items():
                tot[f"commands {payload} in Kafka"] += n
            if w != g:
                lines.append(f"commands to {actuator}: {_first_difference(list(w), list(g))}")
        if lines:
            problems.append(f"{device}: " + "\n    ".join(lines))
    tot["devices with a difference"] = len(problems)
    width = max(len(k) for k in tot)
    lines = [f"  {k:<{width}} {v:>7,}" for k, v in tot.items()]
    extras = {d: sorted(Counter(kafka.devices[d].events) - Counter(w.events)) for d, w in expected.items()}
    extras = {d: e for d, e in extras.items() if e}
    if extras:  # the rarer kind of difference: name them all, whichever devices the details show
        lines.append(f"  duplicated or extra events: {dict(list(extras.items())[:SHOW_DEVICES * 2])}")
    return lines, problems


# ---------------------------------------------------------------------- the test
def _kill_points(rng: random.Random) -> list[tuple[int, int]]:
    """``(kill once this many messages were sent, then let the publisher go this many further)``.

    Each kill comes a random number of messages after the publisher resumed for that
    gateway's life (0 to :data:`LIFE_MAX`: a small one lands while the new gateway still
    drains the backlog the broker kept for it), then the publisher sends a random backlog
    (0 to :data:`BACKLOG_MAX`) into the broker while the gateway is down.
    """
    points: list[tuple[int, int]] = []
    held = 0
    for _ in range(KILLS):
        at = held + rng.randint(0, LIFE_MAX)
        backlog = rng.randint(0, BACKLOG_MAX)
        points.append((at, backlog))
        held = at + backlog
    assert held < MESSAGES - 500, "the kills must all fall inside the stream"
    return points


def test_ten_sigkills_keep_rule_events_and_commands_exactly_once(
    mosquitto: Mosquitto, kafka: KafkaEndpoint, tmp_path: Path
) -> None:
    began = time.monotonic()
    run = RuleRun(tmp_path / "run", mosquitto, kafka, devices=DEVICES)
    points = _kill_points(random.Random(SEED))
    pub = StreamPublisher(mosquitto, run.message, MESSAGES, RATE, limit=points[0][0] + points[0][1])
    watch = KafkaWatch(kafka.bootstrap, run.topics["readings"])  # for settling only
    actuators = MqttWatch(mosquitto, f"{run.mqtt_prefix}/act/#")
    gateway = GatewayProc(run)
    notes: list[str] = []
    try:
        actuators.start()
        watch.start()
        life_began = time.monotonic()
        gateway.start()
        pub.start()
        for i, (at, backlog) in enumerate(points):
            # a kill lands while rules fire: once commands of this life reached the actuators
            while pub.sent < at or not actuators.count_between(life_began, time.monotonic()):
                assert gateway.alive, f"the gateway died on its own before kill {i + 1}:\n{gateway.tail()}"
                assert pub.is_alive(), "the publisher stopped"
                time.sleep(0.002)
            killed = time.monotonic()
            gateway.kill()
            # the kill has to land while rules fire: actuator commands in the last moments of this life
            recent = actuators.count_between(max(life_began, killed - 0.5), killed)
            life = actuators.count_between(life_began, killed)
            notes.append(f"kill {i + 1} at message {pub.sent:,} (+{backlog} while down): "
                         f"{life} commands on MQTT in that life, {recent} in its last 0.5 s")  # fmt: skip
            assert recent > 0, f"kill {i + 1} did not land while rules were firing:\n" + "\n".join(notes)
            life_began = time.monotonic()
            gateway.start()
            nxt = points[i + 1] if i + 1 < len(points) else (MESSAGES, 0)
            pub.allow(nxt[0] + nxt[1])
        pub.join(180)
        assert not pub.is_alive(), "the publisher did not finish"
        acked = sorted(pub.acked_seqs())
        # every message was acknowledged (the broker never went away): the reference is well defined
        assert len(acked) == MESSAGES == pub.sent, f"acked {len(acked):,} of {pub.sent:,} sent"
        settle(watch, {(run.device(s), "seq", s): 0.0 for s in acked}, timeout=120)
        code = gateway.terminate()
        assert code == 0, f"the final SIGTERM ended with {code}:\n{gateway.tail()}"
    finally:
        pub.halt.set()
        gateway.kill()
        watch.stop()
        actuators.stop()

    kafka_side = _tally(run, *(read_committed(kafka.bootstrap, run.topics[k]) for k in
                               ("readings", "events", "commands")))  # fmt: skip
    expected = _reference(run, acked)
    totals, problems = _compare(expected, kafka_side)
    on_mqtt = Counter(payload for _topic, payload in actuators.messages)
    report = "\n".join([
        f"{KILLS} SIGKILLs (seed {SEED}), {MESSAGES:,} QoS 1 messages from {DEVICES} devices at {RATE:g}/s, "
        f"{gateway.starts} gateway starts, {time.monotonic() - began:.0f} s",
        *(f"  {n}" for n in notes),
        "reference (uninterrupted run through rules.RuleEngine) vs Kafka (read_committed):",
        *totals,
        f"  ce_id duplicates {kafka_side.ce_id_dups}; records of no known device {len(kafka_side.foreign)}",
        f"  (for information: commands the actuators got on MQTT: {dict(on_mqtt)})",
    ])  # fmt: skip
    print(report)
    shown = problems[:SHOW_DEVICES]
    more = f"\n... and {len(problems) - len(shown)} more devices" if len(problems) > len(shown) else ""
    assert not problems, report + "\nfirst differences per device:\n" + "\n".join(shown) + more
    assert kafka_side.ce_id_dups == 0, report
    assert not kafka_side.foreign, kafka_side.foreign[:5]
