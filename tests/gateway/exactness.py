"""What an uninterrupted run over the same readings gives, and what Kafka holds, per device:
the comparison behind the exactly-once tests of rule events and commands (issue 11).

The streams are :class:`bench.chaoslib.RuleRun`'s: every device's rule fires on every
second reading and clears on the next; each ``t`` value and each rule event names the
message that decided it.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

from bench.chaoslib import RuleRun, TopicRecord
from gateway.config import load_config
from gateway.model import Command, Event, Reading
from rules import Now, RuleEngine

__all__ = ["DeviceLog", "KafkaTally", "compare", "reference", "tally"]

SHOW_DEVICES = 6
SHOW_ITEMS = 6
RATE = 1500.0
"""The pace of the virtual clock of the reference run (only ``for``/cooldown would see it)."""

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
def reference(run: RuleRun, seqs: list[int]) -> dict[str, DeviceLog]:
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


def tally(run: RuleRun, readings: list[TopicRecord], events: list[TopicRecord],
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


def compare(expected: dict[str, DeviceLog], kafka: KafkaTally) -> tuple[list[str], list[str]]:
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


