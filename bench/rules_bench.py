"""Rules engine figures: readings per second on one core, memory per rule.

    .venv/bin/python -m bench.rules_bench            # 1000 rules over 1000 sensors
    .venv/bin/python -m bench.rules_bench --rules 5000 --readings 500000

The workload: one rule per sensor, a mix of the rule kinds people write (thresholds
with hysteresis, `between`, `equals`, 5-minute averages, `for` waits, two-sensor
`all:`), values wandering around the thresholds so rules fire and clear. Readings and
clock instants are built before the timed loop; the loop is what the runtime does per
reading: ``engine.on_reading(reading, now)``. Prints medians of a few runs; nothing
here is asserted by the tests.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import time
import tracemalloc

from gateway.model import Reading
from rules import Now, RuleEngine, RuleSet
from rules.schema import Rule

START_WALL = 1_767_600_000.0


def make_rules(count: int) -> list[Rule]:
    rules = []
    for i in range(count):
        sensor = f"dev-{i}/temperature"
        kind = i % 10
        when: dict[str, object]
        if kind < 5:
            when = {"sensor": sensor, "above": 25, "hysteresis": 0.5}
        elif kind == 5:
            when = {"sensor": sensor, "between": [18, 24], "hysteresis": 0.5}
        elif kind == 6:
            when = {"sensor": sensor, "below": 19, "for": "2m"}
        elif kind == 7:
            when = {"sensor": sensor, "avg": "5m", "above": 25, "hysteresis": 0.5}
        elif kind == 8:
            when = {"sensor": f"dev-{i}/state", "equals": "open"}
        else:
            when = {
                "all": [
                    {"sensor": sensor, "above": 25},
                    {"sensor": f"dev-{(i + 1) % count}/temperature", "above": 20},
                ]
            }
        rules.append(
            Rule.model_validate(
                {
                    "id": f"rule-{i}",
                    "when": when,
                    "then": [{"set": f"act-{i}/relay", "to": {"state": "on"}}],
                    "else": [{"set": f"act-{i}/relay", "to": {"state": "off"}}],
                    "cooldown": "10s",
                }
            )
        )
    return rules


def make_readings(sensors: int, count: int, seed: int = 7) -> list[tuple[Reading, Now]]:
    rnd = random.Random(seed)
    level = [22.0] * sensors
    out = []
    for n in range(count):
        i = rnd.randrange(sensors)
        t = n * 0.001  # 1000 readings per second of virtual time
        wall = START_WALL + t
        if i % 10 == 8:
            reading = Reading(f"dev-{i}", "state", rnd.choice(("open", "closed")), wall, wall)
        else:
            level[i] = min(30.0, max(14.0, level[i] + rnd.uniform(-0.6, 0.6)))
            reading = Reading(f"dev-{i}", "temperature", round(level[i], 2), wall, wall)
        out.append((reading, Now(t, wall)))
    return out


def leaves_per_reading(ruleset: RuleSet, readings: list[tuple[Reading, Now]]) -> float:
    """How many condition leaves (rule evaluations of one sensor) a reading touches."""
    slots = RuleEngine(ruleset, Now(0.0, START_WALL)).slots()
    touched = sum(len(slots[r.sensor].leaves) if r.sensor in slots else 0 for r, _ in readings)
    return touched / len(readings)


def run_once(ruleset: RuleSet, readings: list[tuple[Reading, Now]]) -> tuple[float, int]:
    engine = RuleEngine(ruleset, Now(0.0, START_WALL))
    actions = 0
    on_reading = engine.on_reading
    gc.collect()
    started = time.perf_counter()
    for reading, now in readings:
        actions += len(on_reading(reading, now))
    elapsed = time.perf_counter() - started
    return len(readings) / elapsed, actions


def memory_per_rule(count: int, readings: list[tuple[Reading, Now]]) -> tuple[float, float, float]:
    """Bytes per rule: the validated models, a fresh engine, the engine after the readings."""
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    rules = make_rules(count)
    models = tracemalloc.get_traced_memory()[0] - base
    ruleset = RuleSet(tuple(rules))
    before = tracemalloc.get_traced_memory()[0]
    engine = RuleEngine(ruleset, Now(0.0, START_WALL))
    fresh = tracemalloc.get_traced_memory()[0] - before
    for reading, now in readings:
        engine.on_reading(reading, now)
    loaded = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return models / count, fresh / count, loaded / count


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rules", type=int, default=1000, help="rules, one per sensor (default 1000)")
    parser.add_argument("--readings", type=int, default=300_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    ruleset = RuleSet(tuple(make_rules(args.rules)))
    readings = make_readings(args.rules, args.readings)
    rates, actions = [], 0
    for _ in range(args.runs):
        rate, actions = run_once(ruleset, readings)
        rates.append(rate)
    median = statistics.median(rates)
    models, fresh, loaded = memory_per_rule(args.rules, readings[: min(len(readings), 300_000)])
    print(
        f"rules engine: {args.rules} rules over {args.rules} sensors, "
        f"{args.readings} readings, {args.runs} runs"
    )
    print(f"  readings/s (median):      {median:,.0f}   (min {min(rates):,.0f}, max {max(rates):,.0f})")
    print(f"  microseconds per reading: {1e6 / median:.2f}")
    per = leaves_per_reading(ruleset, readings)
    print(f"  rule evaluations/s:       {median * per:,.0f}   ({per:.2f} condition leaves per reading)")
    print(f"  actions per run:          {actions:,}")
    print(f"  memory per rule, models:  {models:,.0f} B (validated pydantic models, load time only)")
    print(f"  memory per rule, engine:  {fresh:,.0f} B fresh, {loaded:,.0f} B after the readings")


if __name__ == "__main__":
    main()
