"""``edgegw simulate`` end to end: against the real Mosquitto with several publisher
processes (the MQTT source counts what arrives), pty devices with unplug faults, and the
CLI's errors."""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
from collections import Counter
from pathlib import Path

import pytest

from devices.config import DeviceConfig, MqttConnection
from devices.mqtt_source import MqttSource
from devices.serial_source import SerialSource
from gateway.cli import main
from simulators.fleet import FleetSpec
from simulators.generator import FleetGenerator
from simulators.serial_fleet import SerialFleet
from simulators.testbed import Mosquitto
from tests.devices.conftest import Collector, running, triples, until


def write_fleet(tmp_path: Path, token: str) -> Path:
    path = tmp_path / "fleet.yaml"
    path.write_text(f"""
seed: 3
rate: 100
groups:
  - {{kind: temperature, count: 10, profile: zigbee2mqtt, prefix: {token}-z}}
  - {{kind: power, count: 5, profile: tasmota, prefix: {token}-t}}
  - {{kind: co2, count: 5, profile: json, prefix: {token}-j}}
  - {{kind: door, count: 5, profile: plain, prefix: {token}-p}}
faults:
  garbage: 0.01
""")
    return path


@pytest.mark.mqtt
@pytest.mark.slow
async def test_simulate_cli_with_two_processes(
    mosquitto: Mosquitto, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fleet = write_fleet(tmp_path, secrets.token_hex(3))
    assert main(["simulate", str(fleet), "--print-config"]) == 0
    printed = capsys.readouterr().out
    spec = FleetSpec.load(fleet)
    devices = [DeviceConfig.model_validate(d) for d in spec.gateway_devices()]
    assert all(d.id in printed for d in devices)
    collector = Collector()
    client_id = f"edgegw-{secrets.token_hex(4)}"
    conn = MqttConnection(host=mosquitto.host, port=mosquitto.port, client_id=client_id)
    source = MqttSource(conn, devices, collector)
    async with running(source):
        argv = ["simulate", str(fleet), "--broker", f"{mosquitto.host}:{mosquitto.port}", "--rate", "600",
                "--duration", "2", "--processes", "2", "--json", "--quiet"]
        code = await asyncio.to_thread(main, argv)
        out = capsys.readouterr().out
        assert code == 0, out
        summary = json.loads(out.strip().splitlines()[-1])
        await collector.wait_for(summary["readings"], within=20)
        await collector.settle()
        for _ in range(100):  # a garbage message may still be on its way after the last reading
            if source.counter.total() >= summary["garbage"]:
                break
            await asyncio.sleep(0.1)
    assert summary["acked"] == summary["messages"] > 0
    assert 600 <= summary["readings"] <= 1300  # 600/s for 2 s, give or take the start
    assert len(collector.readings) == summary["readings"]
    assert source.counter.total() == summary["garbage"]
    assert set(summary["by_profile"]) == {"zigbee2mqtt", "tasmota", "json", "plain"}


def test_simulate_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: 1\ngroups:\n  - kind: toaster\n")
    assert main(["simulate", str(bad), "--broker", "127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:3:" in err
    assert "groups[0].kind" in err
    broken = tmp_path / "broken.yaml"
    broken.write_text("groups: [\n")
    assert main(["simulate", str(broken)]) == 2
    assert f"{broken}:" in capsys.readouterr().err
    assert main(["simulate", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read" in capsys.readouterr().err
    good = write_fleet(tmp_path, "x")
    assert main(["simulate", str(good)]) == 2
    assert "--broker" in capsys.readouterr().err
    assert main(["simulate", str(good), "--broker", "127.0.0.1:1", "--duration", "1", "--quiet"]) == 1
    assert "error:" in capsys.readouterr().err


@pytest.mark.serial
def test_serial_fleet_unplugs_and_replugs(tmp_path: Path) -> None:
    spec = FleetSpec.model_validate({
        "seed": 1, "rate": 200,
        "serial": [{"kind": "temperature", "count": 2, "path": str(tmp_path / "tty")}],
        "faults": {"disconnect": {"every": 0.3, "duration": 0.1}},
    })
    fleet = SerialFleet(spec).start()
    try:
        assert sorted(p.name for p in tmp_path.iterdir()) == ["tty-1", "tty-2"]
        stop = threading.Event()
        stats = fleet.run(rate=200, duration=1.0, stop=stop)
    finally:
        fleet.close()
    assert stats.disconnects >= 2
    assert stats.dropped > 0
    # plugged at the start and after every outage (the last may still be running at the end)
    assert all(p.plugs in (stats.disconnects, stats.disconnects + 1) for p in fleet.ptys.values())
    assert not any(tmp_path.iterdir())


@pytest.mark.serial
async def test_serial_fleet_readings_reach_serial_sources_exactly(tmp_path: Path) -> None:
    spec = FleetSpec.model_validate({
        "seed": 5, "rate": 300,
        "serial": [{"kind": "temperature", "count": 2, "format": "kv", "path": str(tmp_path / "kv")},
                   {"kind": "power", "count": 1, "format": "json", "path": str(tmp_path / "js")}],
        "faults": {"garbage": 0.03},
    })
    devices = [DeviceConfig.model_validate(d) for d in spec.gateway_devices()]
    fleet = SerialFleet(spec).start()
    collector = Collector()
    sources = [SerialSource(d, collector) for d in devices]
    tasks = [asyncio.create_task(s.run()) for s in sources]
    try:
        await until(lambda: all(s.connected for s in sources))
        stats = await asyncio.to_thread(fleet.run, rate=300, max_messages=200)
        expected = FleetGenerator(spec, spec.devices(), rate=300).take(stats.messages)
        want = Counter((m.device_id, k, v) for m in expected for k, v in m.readings)
        await collector.wait_for(sum(want.values()))
        await collector.settle()
    finally:
        for source in sources:
            source.stop()
        await asyncio.gather(*tasks)
        fleet.close()
    assert Counter(triples(collector.readings)) == want
    assert sum(s.counter.total() for s in sources) == stats.garbage > 0
