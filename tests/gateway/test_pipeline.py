"""The pipeline on its own: a fake spool that the test settles by hand, the real engine."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from bridge import DeadInput, Spool
from bridge.config import SpoolConfig, TopicsConfig
from bridge.policy import lane_priorities
from devices import Actuators, BadInputCounter, BatchState, SourceBatch
from gateway.config import LoadedConfig, load_config
from gateway.errors import SpoolError
from gateway.ledger import DeliveryLedger
from gateway.model import Event, Origin, Reading
from gateway.pipeline import SENSORS_MAX, Counters, Pipeline
from rules import Now, RuleEngine


class FakeSpool:
    """Keeps each submission; ``durable(i)`` / ``fail()`` settle them as the writer would."""

    def __init__(self) -> None:
        self.submits: list[dict[str, Any]] = []
        self.pending = 0
        self.failed: SpoolError | None = None

    def submit(self, items: list[Any], on_durable: Any = None, *, on_void: Any = None,
               marks: Any = (), state: Any = None, dead: Any = ()) -> Any:  # fmt: skip
        if self.failed is not None:
            raise self.failed
        self.submits.append({"items": list(items), "ok": on_durable, "void": on_void, "marks": list(marks),
                             "state": state, "dead": list(dead)})  # fmt: skip
        return SimpleNamespace(last_seq=len(self.submits))

    def durable(self, i: int) -> None:
        if self.submits[i]["ok"] is not None:
            self.submits[i]["ok"]()

    def fail(self) -> None:
        self.failed = SpoolError("spool write failed: disk I/O error")
        for s in self.submits:
            if s["void"] is not None:
                s["void"]()


def now() -> Now:
    return Now(time.monotonic(), time.time())


def _loaded(tmp_path: Path) -> LoadedConfig:
    """Device ``a`` (``home/a``, metric ``t``) and rule ``hot`` (``a/t`` above 30: emit)."""
    config = tmp_path / "edgegw.yaml"
    config.write_text(
        f"gateway: {{id: p, state_dir: {tmp_path}}}\nhttp: {{enabled: false}}\n"
        "devices:\n  - {id: a, topic: home/a, profile: plain, metric: t}\n"
        "rules:\n  - {id: hot, when: {sensor: a/t, above: 30}, then: [{emit: {severity: warning}}]}\n"
    )
    return load_config(config)


@pytest.fixture
def pipeline(tmp_path: Path) -> tuple[Pipeline, FakeSpool, list[str]]:
    loaded = _loaded(tmp_path)
    failures: list[str] = []
    p = Pipeline(Actuators([]), Counters(), now=now, bad_input=BadInputCounter(), on_failure=failures.append)
    spool = FakeSpool()
    p.attach(spool, RuleEngine(loaded.rules, now()), DeliveryLedger())  # type: ignore[arg-type]
    return p, spool, failures


def reading(value: float, device: str = "a", metric: str = "t") -> Reading:
    return Reading(device, metric, value, time.time(), time.time())


def mqtt_batch(values: list[float], mid: int, *, dup: bool = False) -> SourceBatch:
    origin = Origin.of("home/a", repr(values).encode(), mid=mid, dup=dup)
    return SourceBatch([reading(v) for v in values], origins=[origin] * len(values), messages=[origin])


async def test_a_batch_goes_to_the_spool_once_with_its_events_rule_state_and_packet_ids(
    pipeline: tuple[Pipeline, FakeSpool, list[str]],
) -> None:
    p, spool, _ = pipeline
    batch = mqtt_batch([35.0], mid=1)
    p.on_batch(batch)
    assert len(spool.submits) == 1
    sub = spool.submits[0]
    assert [type(i).__name__ for i in sub["items"]] == ["Reading", "Event", "Event"]  # fired + emit
    assert sub["marks"] == [(1, batch.messages[0].digest)]
    assert set(sub["state"]) == {"rule:hot"}
    assert sub["state"]["rule:hot"]["fired"] is True
    states = [batch.state]
    spool.durable(0)
    await asyncio.sleep(0)  # settled on the loop
    states.append(batch.state)
    assert states == [BatchState.PENDING, BatchState.DURABLE]


async def test_a_redelivery_of_a_committed_message_runs_no_rule_and_is_not_spooled(
    pipeline: tuple[Pipeline, FakeSpool, list[str]],
) -> None:
    p, spool, _ = pipeline
    p.on_batch(mqtt_batch([35.0], mid=7))
    spool.durable(0)
    await asyncio.sleep(0)
    again = mqtt_batch([35.0], mid=7, dup=True)  # the PUBACK was lost: the broker sends it again
    p.on_batch(again)
    assert spool.submits[1]["items"] == []  # nothing spooled, no second fire...
    assert p.counters.redeliveries == 1
    spool.durable(1)  # ...but still settled in order, so its PUBACK goes
    await asyncio.sleep(0)
    assert again.state is BatchState.DURABLE


async def test_a_rule_that_raises_dead_letters_the_reading_and_the_rest_goes_on(
    pipeline: tuple[Pipeline, FakeSpool, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    p, spool, _ = pipeline
    assert p.engine is not None
    real = p.engine.on_reading

    def on_reading(r: Reading, n: Now) -> list[Any]:
        if r.value == 13.0:
            raise ZeroDivisionError("a bug in a rule")
        return real(r, n)

    monkeypatch.setattr(p.engine, "on_reading", on_reading)
    p.on_batch(mqtt_batch([13.0, 35.0], mid=2))
    sub = spool.submits[0]
    assert [d.reason for d in sub["dead"]] == ["rule_error"]
    assert isinstance(sub["dead"][0], DeadInput)
    assert sub["dead"][0].key == "a/t"  # a plain batch names the sensor; an MQTT one, the topic
    assert any(isinstance(i, Event) for i in sub["items"])  # the other reading fired the rule
    assert p.counters.poison == {("a", "rule_error"): 1}


async def test_a_spool_failure_voids_what_is_in_flight_and_suspends(
    pipeline: tuple[Pipeline, FakeSpool, list[str]],
) -> None:
    p, spool, failures = pipeline
    batches = [mqtt_batch([20.0 + i], mid=10 + i) for i in range(3)]
    for b in batches:
        p.on_batch(b)
    spool.fail()
    await asyncio.sleep(0)
    assert [b.state for b in batches] == [BatchState.VOID] * 3
    assert p.suspended
    assert len(failures) == 1
    assert "disk I/O error" in failures[0]
    late = mqtt_batch([50.0], mid=20)
    p.on_batch(late)  # while suspended: voided at once, the rules never see it
    assert late.state is BatchState.VOID
    assert len(spool.submits) == 3


async def test_last_values_and_counts_stay_bounded_with_wildcard_devices(
    pipeline: tuple[Pipeline, FakeSpool, list[str]],
) -> None:
    p, _spool, _ = pipeline
    for i in range(SENSORS_MAX + 500):
        p.on_batch(SourceBatch([reading(1.0, device=f"zigbee-{i}")]))
    assert len(p.counters.last_values) == SENSORS_MAX
    assert len(p.counters.readings) <= SENSORS_MAX


async def test_a_group_commit_settles_its_batches_with_one_wake_of_the_loop_in_order(
    pipeline: tuple[Pipeline, FakeSpool, list[str]], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The spool's writer thread settles a group's batches one after another: they reach the
    loop through one ``call_soon_threadsafe`` (a self-pipe write and a wake each, before)
    and settle in submission order; a batch settled after the loop drained wakes it again."""
    p, spool, _ = pipeline
    order: list[int] = []

    class Recorded(SourceBatch):
        def _on_durable(self) -> None:
            order.append(self.messages[0].mid or 0)

    def recorded(i: int) -> SourceBatch:
        origin = Origin.of("home/a", b"%d" % i, mid=i)
        return Recorded([reading(20.0)], origins=[origin], messages=[origin])

    batches = [recorded(i) for i in range(50)]
    for batch in batches:
        p.on_batch(batch)
    loop = asyncio.get_running_loop()
    wakes: list[object] = []
    real = loop.call_soon_threadsafe

    def counted(callback: Any, *args: Any) -> Any:
        wakes.append(callback)
        return real(callback, *args)

    monkeypatch.setattr(loop, "call_soon_threadsafe", counted)
    def settle_group() -> None:  # as the writer thread does after one commit
        for i in range(49):
            spool.durable(i)

    writer = threading.Thread(target=settle_group)
    writer.start()
    writer.join()
    await asyncio.sleep(0)
    assert len(wakes) == 1
    assert order == list(range(49))
    assert all(b.state is BatchState.DURABLE for b in batches[:49])
    spool.durable(49)  # the next group: a wake of its own
    await asyncio.sleep(0)
    assert len(wakes) == 2
    assert order == list(range(50))


async def test_the_acknowledged_mark_moves_only_when_the_source_acknowledged(
    pipeline: tuple[Pipeline, FakeSpool, list[str]],
) -> None:
    """What the run marker keeps (issue 17): a committed batch whose PUBACKs did not go out
    yet is not counted as acknowledged (after a cut the broker sends it again)."""
    p, spool, _ = pipeline
    batch = mqtt_batch([20.0], mid=30)
    p.on_batch(batch)
    spool.durable(0)
    await asyncio.sleep(0)
    assert p.acked_seq == 0  # durable, PUBACK not sent
    batch.acked()  # the MQTT source sent the PUBACKs
    assert p.acked_seq == 1
    serial = SourceBatch([reading(21.0)])  # nothing to acknowledge: taken once durable
    p.on_batch(serial)
    spool.durable(1)
    await asyncio.sleep(0)
    assert p.acked_seq == 2


async def test_a_settled_batch_is_freed_at_once_not_by_the_garbage_collector(tmp_path: Path) -> None:
    """A batch, its readings and its spool submission hold no reference cycle once settled:
    reference counting frees them. A cycle per batch (the submission and its settle callback
    held each other) left ~15 objects a reading to the cyclic collector, whose passes then
    stopped every thread for 5-30 ms several times a second at 5k readings/s: the
    sensor-to-actuator p99."""
    loaded = _loaded(tmp_path)
    lanes = lane_priorities(TopicsConfig().of_kind())
    spool = Spool.open(SpoolConfig(path=tmp_path / "spool.db"), lanes=lanes)
    p = Pipeline(Actuators([]), Counters(), now=now, bad_input=BadInputCounter(), on_failure=lambda _r: None)
    p.attach(spool, RuleEngine(loaded.rules, now()), DeliveryLedger())

    def batches_alive() -> int:
        return sum(1 for o in gc.get_objects() if isinstance(o, SourceBatch))

    gc.collect()
    gc.disable()
    try:
        before = batches_alive()
        held: list[SourceBatch] = []
        for i in range(40):
            held.append(mqtt_batch([35.0 if i % 2 else 20.0], mid=i + 1))
            p.on_batch(held[-1])
        spool.flush()
        for _ in range(200):  # settled on the loop, from the writer thread
            if all(b.state is BatchState.DURABLE for b in held):
                break
            await asyncio.sleep(0.01)
        assert all(b.state is BatchState.DURABLE for b in held)
        held.clear()
        spool.flush()  # the writer thread lets go of the group it wrote last
        await asyncio.sleep(0)
        assert batches_alive() == before, "settled batches still alive: a reference cycle holds them"
    finally:
        gc.enable()
        spool.close()
