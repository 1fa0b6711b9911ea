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

import random
import time
from collections import Counter
from pathlib import Path

import pytest

from bench.chaoslib import (
    GatewayProc,
    KafkaWatch,
    MqttWatch,
    RuleRun,
    StreamPublisher,
    read_committed,
    settle,
)
from simulators.testbed import KafkaEndpoint, Mosquitto
from tests.gateway.exactness import SHOW_DEVICES, compare, reference, tally

pytestmark = [pytest.mark.mqtt, pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(300)]

DEVICES = 20
MESSAGES = 12_000
RATE = 1500.0
KILLS = 10
SEED = 11
LIFE_MAX = 800
BACKLOG_MAX = 800

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


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_ten_sigkills_keep_rule_events_and_commands_exactly_once(
    mosquitto: Mosquitto, kafka: KafkaEndpoint, tmp_path: Path, protocol: str
) -> None:
    """On MQTT 5 a kill also finds commits not synced yet (deferred syncs): the next start
    syncs them, ships them, and takes the broker's redeliveries of their messages as seen."""
    began = time.monotonic()
    run = RuleRun(tmp_path / "run", mosquitto, kafka, devices=DEVICES, mqtt_options={"protocol": protocol})
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

    kafka_side = tally(run, *(read_committed(kafka.bootstrap, run.topics[k]) for k in
                               ("readings", "events", "commands")))  # fmt: skip
    expected = reference(run, acked)
    totals, problems = compare(expected, kafka_side)
    on_mqtt = Counter(payload for _topic, payload in actuators.messages)
    report = "\n".join([
        f"{KILLS} SIGKILLs (seed {SEED}), MQTT {protocol}, {MESSAGES:,} QoS 1 messages from {DEVICES} "
        f"devices at {RATE:g}/s, "
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
