"""The MQTT source's ingest step without a broker: any message, no exception; bad input
counted per device and reason; routing by exact and wildcard filters."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from devices.config import DeviceConfig, MqttConnection
from devices.errors_counter import UNKNOWN_DEVICE
from devices.mqtt_source import MqttSource, TopicRouter
from devices.paho_client import InMessage
from devices.profiles import build_decoder
from tests.devices.conftest import Collector

DEVICES = [
    DeviceConfig(id="z", topic="zigbee2mqtt/z", profile="zigbee2mqtt"),
    DeviceConfig(id="t", topic="tele/t/+", profile="tasmota"),
    DeviceConfig.model_validate({"id": "j", "topic": "j/#", "profile": "json", "fields": {"a": "a"}}),
    DeviceConfig(id="p", topic="p/+/v", profile="plain"),
]
TOPICS = ["zigbee2mqtt/z", "tele/t/SENSOR", "tele/t/STATE", "tele/t/LWT", "j/x/y", "p/q/v", "other"]


def message(topic: str | None, payload: bytes, mid: int = 1) -> InMessage:
    raw = topic.encode() if topic is not None else b"\xff"
    return InMessage(topic, raw, payload, mid=mid, qos=1, dup=False)


def test_router_exact_and_wildcards() -> None:
    router = TopicRouter([(d.topic or "", build_decoder(d)) for d in DEVICES], cache_size=2)
    assert [d.device_id for d in router.route("zigbee2mqtt/z")] == ["z"]
    assert [d.device_id for d in router.route("j/a/b/c")] == ["j"]
    assert [d.device_id for d in router.route("p/x/v")] == ["p"]
    assert router.route("p/x/w") == []
    assert router.route("zigbee2mqtt/z/set") == []  # the cache was cleared on the way: still right
    assert [d.device_id for d in router.route("j/a/b/c")] == ["j"]


@settings(max_examples=300, deadline=None)
@given(batch=st.lists(st.tuples(st.sampled_from([*TOPICS, None]), st.binary(max_size=80)), max_size=20))
def test_ingest_never_raises_and_counts_what_it_rejects(batch: list[tuple[str | None, bytes]]) -> None:
    collector = Collector()
    source = MqttSource(MqttConnection(), DEVICES, collector)
    source.ingest([message(t, p, i + 1) for i, (t, p) in enumerate(batch)])
    rejected = source.counter.total()
    unknown = sum(1 for t, _ in batch if t in (None, "other"))
    assert source.counter.counts[(UNKNOWN_DEVICE, "unknown_topic")] + source.counter.counts[
        (UNKNOWN_DEVICE, "bad_topic")] == unknown
    assert rejected >= unknown
    assert source.messages == len(batch)
    assert all(r.device_id in {"z", "t", "j", "p"} for r in collector.readings)


def test_one_noisy_device_does_not_hold_back_the_others() -> None:
    collector = Collector()
    source = MqttSource(MqttConnection(), DEVICES, collector)
    noise = [message("zigbee2mqtt/z", b"\xff\x00" * 10, i) for i in range(1, 1001)]
    good = [message("p/q/v", b"21.5", 2000)]
    source.ingest(noise + good)
    assert [(r.device_id, r.value) for r in collector.readings] == [("p", 21.5)]
    assert source.counter.by_reason("z") == {"not_utf8": 1000}
