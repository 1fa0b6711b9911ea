"""Fleet specs, signal models, the generator and the encoders (no broker)."""

from __future__ import annotations

import itertools
import statistics
from pathlib import Path

import pytest
from pydantic import ValidationError

from devices.config import DeviceConfig
from devices.profiles import build_decoder
from gateway.errors import PayloadError
from simulators.fleet import FleetSpec
from simulators.generator import FleetGenerator
from simulators.signals import make_signal

FLEETS = Path(__file__).parents[2] / "simulators" / "fleets"


def spec(**kw: object) -> FleetSpec:
    data: dict[str, object] = {
        "seed": 1,
        "rate": 100,
        "groups": [
            {"kind": "temperature", "count": 3, "profile": "zigbee2mqtt"},
            {"kind": "humidity", "count": 2, "profile": "tasmota"},
            {"kind": "power", "count": 2, "profile": "tasmota"},
            {"kind": "motion", "count": 2, "profile": "plain"},
            {"kind": "door", "count": 2, "profile": "tasmota", "prefix": "door-t"},
            {"kind": "co2", "count": 2, "profile": "json"},
            {"kind": "door", "count": 2, "profile": "zigbee2mqtt"},
        ],
        "serial": [{"kind": "temperature", "format": "kv", "path": "/tmp/x"},
                   {"kind": "power", "format": "json", "prefix": "meter"}],
    }
    data.update(kw)
    return FleetSpec.model_validate(data)


def test_shipped_fleets_load_and_give_valid_gateway_config() -> None:
    home = FleetSpec.load(FLEETS / "home.yaml")
    building = FleetSpec.load(FLEETS / "building.yaml")
    assert 18 <= len(home.devices()) <= 25
    assert len(building.devices()) >= 200
    for fleet in (home, building):
        configs = [DeviceConfig.model_validate(d) for d in fleet.gateway_devices()]
        assert len({c.id for c in configs}) == len(configs)
        assert {c.profile for c in configs} >= {"zigbee2mqtt", "tasmota", "json", "plain"}


def test_duplicate_ids_and_empty_fleets_refused() -> None:
    with pytest.raises(ValidationError, match="appears twice"):
        FleetSpec.model_validate({"groups": [{"kind": "door"}, {"kind": "door"}]})
    with pytest.raises(ValidationError, match="at least one"):
        FleetSpec.model_validate({"groups": []})
    with pytest.raises(ValidationError):
        FleetSpec.model_validate({"groups": [{"kind": "toaster"}]})


def test_same_seed_same_stream_other_seed_other_stream() -> None:
    def stream(seed: int) -> list[tuple[str, bytes]]:
        fleet = spec(seed=seed, faults={"garbage": 0.05, "spike": 0.05, "dropout": {"probability": 0.01}})
        return [(m.topic, m.payload) for m in FleetGenerator(fleet).take(500)]

    assert stream(1) == stream(1)
    assert stream(1) != stream(2)


def test_every_message_decodes_to_its_readings() -> None:
    fleet = spec(faults={"garbage": 0.05, "spike": 0.02})
    configs = [DeviceConfig.model_validate(d) for d in fleet.gateway_devices()]
    decoders = {c.id: build_decoder(c) for c in configs}
    generator = FleetGenerator(fleet)
    garbage = 0
    for message in generator.take(2000):
        decoder = decoders[message.device_id]
        payload = message.payload.rstrip(b"\n") if not message.topic else message.payload
        if not message.readings:
            garbage += 1
            with pytest.raises(PayloadError):
                decoder.decode(message.topic, payload, 0.0)
            continue
        got = [(r.metric, r.value) for r in decoder.decode(message.topic, payload, 0.0)]
        assert got == message.readings, message
    assert garbage == generator.stats.garbage > 0
    assert generator.stats.spikes > 0


def test_rate_paces_readings_not_messages() -> None:
    fleet = spec(rate=200)
    generator = FleetGenerator(fleet)
    last = 0.0
    readings = 0
    for due, message in generator.messages():
        if due >= 10.0:
            break
        last = due
        readings += len(message.readings)
    assert last < 10.0
    assert readings == pytest.approx(2000, abs=3)


def test_faults_drop_outs() -> None:
    fleet = spec(faults={"dropout": {"probability": 0.05, "duration": "2s"}})
    generator = FleetGenerator(fleet)
    sent = generator.take(1000)
    assert generator.stats.dropped > 0
    assert len(sent) == 1000


def test_signals_have_their_shapes() -> None:
    temp = make_signal("temperature", 1, "t")
    day = 1_767_225_600.0
    warm = statistics.mean(float(temp.sample(day + 17 * 3600 + i)["temperature"]) for i in range(50))
    cool = statistics.mean(float(temp.sample(day + 5 * 3600 + i)["temperature"]) for i in range(50))
    assert warm - cool > 4.0
    motion = make_signal("motion", 1, "m")
    states = [motion.sample(i)["occupancy"] for i in range(2000)]
    runs = sum(1 for a, b in itertools.pairwise(states) if a and not b)
    assert 20 < runs < 400  # bursts, not noise
    meter = make_signal("power", 1, "p")
    energy = [float(meter.sample(i * 60.0)["energy"]) for i in range(200)]
    assert energy == sorted(energy)
    assert energy[-1] > energy[0]
    sensor = make_signal("co2", 1, "c")
    co2 = [float(sensor.sample(i * 10.0)["co2"]) for i in range(500)]
    assert all(400 <= v <= 2000 for v in co2)
