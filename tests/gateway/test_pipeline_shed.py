"""Back-pressure by QoS: while the spool writer is behind, a QoS 1 batch holds MQTT reading
(the broker keeps its messages) and an at-most-once batch (QoS 0, serial) is not held: its
rules run, its events and commands are spooled, its readings are shed and counted."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from devices import Actuators, BadInputCounter, BatchState, SourceBatch
from gateway.config import load_config
from gateway.ledger import DeliveryLedger
from gateway.metrics import IoStats, Observability
from gateway.model import Event, Reading
from gateway.pipeline import PENDING_HIGH_MIN, SHED_HOLD_FACTOR, Counters, Pipeline
from gateway.runtime import Runtime
from gateway.status.page import gather
from rules import RuleEngine
from tests.gateway.test_metrics import runtime  # noqa: F401 - the fixture
from tests.gateway.test_pipeline import FakeSpool, mqtt_batch, now, reading


@pytest.fixture
def shed_pipeline(tmp_path: Path) -> tuple[Pipeline, FakeSpool, list[bool]]:
    config = tmp_path / "edgegw.yaml"
    config.write_text(
        f"gateway: {{id: p, state_dir: {tmp_path}}}\nhttp: {{enabled: false}}\n"
        "devices:\n  - {id: a, topic: home/a, profile: plain, metric: t}\n"
        "rules:\n  - {id: hot, when: {sensor: a/t, above: 30}, then: [{emit: {severity: warning}}]}\n"
    )
    loaded = load_config(config)
    p = Pipeline(Actuators([]), Counters(), now=now, bad_input=BadInputCounter())
    spool = FakeSpool()
    p.attach(spool, RuleEngine(loaded.rules, now()), DeliveryLedger())  # type: ignore[arg-type]
    holds: list[bool] = []
    p.hold = holds.append
    return p, spool, holds


def qos0_batch(values: list[float]) -> SourceBatch:
    """What the MQTT source hands on for QoS 0 messages (and a serial source for lines):
    readings, nothing to acknowledge."""
    return SourceBatch([reading(v) for v in values])


async def test_a_qos0_batch_while_the_spool_is_behind_runs_its_rules_and_sheds_only_its_readings(
    shed_pipeline: tuple[Pipeline, FakeSpool, list[bool]],
) -> None:
    p, spool, holds = shed_pipeline
    spool.pending = PENDING_HIGH_MIN + 1
    batch = qos0_batch([20.0, 35.0, 20.0])
    with capture_logs() as logs:
        p.on_batch(batch)
        p.on_batch(qos0_batch([36.0, 21.0]))
    kinds = [type(i).__name__ for s in spool.submits for i in s["items"]]
    assert "Reading" not in kinds  # the readings were shed...
    assert kinds.count("Event") >= 2  # ...the fires (and emits) were not
    assert any(s["state"] for s in spool.submits)  # nor the rule state
    assert p.counters.fires == {"hot": 2}
    assert p.counters.shed == {"spool_behind": 5}
    assert p.counters.readings["a"] == 5  # received and counted as such
    assert holds == []  # reading goes on: holding QoS 0 only moves the loss to the broker
    assert batch.state is BatchState.DURABLE  # settled at once: nothing of it left to wait for
    assert [e["event"] for e in logs if "QoS 0 readings" in e["event"]] == [
        "spool writer behind: QoS 0 readings are not spooled until it catches up "
        "(rules still run, commands still leave)"
    ]  # once per episode


async def test_shedding_ends_below_a_quarter_of_the_mark_and_is_logged_once_more(
    shed_pipeline: tuple[Pipeline, FakeSpool, list[bool]],
) -> None:
    p, spool, _ = shed_pipeline
    spool.pending = PENDING_HIGH_MIN + 1
    with capture_logs() as logs:
        p.on_batch(qos0_batch([20.0]))
        spool.pending = PENDING_HIGH_MIN // 2  # below the mark, not yet below a quarter of it
        p.on_batch(qos0_batch([20.0]))
        spool.pending = 0
        p.on_batch(qos0_batch([20.0]))
    assert p.counters.shed["spool_behind"] == 2
    assert [type(i).__name__ for i in spool.submits[-1]["items"]] == ["Reading"]
    events = [e["event"] for e in logs]
    assert events.count("spool writer caught up: QoS 0 readings are spooled again") == 1
    assert [e.get("shed") for e in logs if e["event"].startswith("spool writer caught up")] == [2]


async def test_a_qos1_batch_while_the_spool_is_behind_holds_reading_and_keeps_its_readings(
    shed_pipeline: tuple[Pipeline, FakeSpool, list[bool]],
) -> None:
    p, spool, holds = shed_pipeline
    spool.pending = PENDING_HIGH_MIN + 1
    batch = mqtt_batch([35.0], mid=1)
    p.on_batch(batch)
    assert isinstance(spool.submits[0]["items"][0], Reading)
    assert p.counters.shed == {}
    assert holds == [True]
    assert p.counters.holds == 1
    assert batch.state is BatchState.PENDING  # acknowledged only once durable
    spool.pending = 0
    await asyncio.sleep(0.05)  # the release check runs on the loop
    assert holds == [True, False]


async def test_qos0_holds_too_when_even_events_and_commands_outrun_the_spool(
    shed_pipeline: tuple[Pipeline, FakeSpool, list[bool]],
) -> None:
    p, spool, holds = shed_pipeline
    spool.pending = PENDING_HIGH_MIN * SHED_HOLD_FACTOR + 1  # a stuck disk: memory comes first
    p.on_batch(qos0_batch([35.0]))
    assert p.counters.shed == {"spool_behind": 1}
    assert holds == [True]


async def test_nothing_is_shed_or_held_while_the_spool_keeps_up(
    shed_pipeline: tuple[Pipeline, FakeSpool, list[bool]],
) -> None:
    p, spool, holds = shed_pipeline
    spool.pending = PENDING_HIGH_MIN
    p.on_batch(qos0_batch([20.0, 35.0]))
    items = spool.submits[0]["items"]
    assert sum(isinstance(i, Reading) for i in items) == 2
    assert any(isinstance(i, Event) for i in items)
    assert p.counters.shed == {}
    assert holds == []


async def test_shed_readings_are_in_metrics_and_in_the_status_page_data(runtime: Runtime) -> None:  # noqa: F811
    _status, _type, body = await Observability(runtime).metrics()
    assert _shed_samples(body) == {"spool_behind": 0.0}  # there from the start, for alerts
    runtime.state.shed["spool_behind"] += 7
    _status, _type, body = await Observability(runtime).metrics()
    assert _shed_samples(body) == {"spool_behind": 7.0}
    assert runtime.spool is not None
    inputs = gather(runtime, IoStats(spool=runtime.spool.stats()), healthy=True, fingerprint="x")
    assert inputs.spool is not None
    assert inputs.spool["readings_shed"] == 7


def _shed_samples(body: bytes) -> dict[str, float]:
    return {
        s.labels["reason"]: s.value
        for f in text_string_to_metric_families(body.decode())
        for s in f.samples
        if s.name == "edgegw_readings_shed_total"
    }
