"""The serial source: pure core with a fake port, and on real pseudo-terminals (readings,
garbage counted and skipped, unplug and replug at the same path)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from devices.config import DeviceConfig
from devices.errors_counter import BadInputCounter
from devices.health import DeviceState, HealthTracker
from devices.serial_source import SerialIngest, SerialLineWriter, SerialSource, open_serial
from devices.sink import SourceBatch
from gateway.errors import ActuatorError, SourceError
from simulators.pty_device import PtyDevice
from tests.devices.conftest import Collector, triples, until


def serial_dev(path: str | Path, profile: str = "kv", max_line: int = 64) -> DeviceConfig:
    return DeviceConfig.model_validate({
        "id": "boiler", "transport": "serial", "profile": profile,
        "serial": {"port": str(path), "baud": 115200, "max_line": max_line,
                   "reconnect_min": 0.05, "reconnect_max": 0.2},
    })


def test_ingest_counts_and_skips_bad_lines() -> None:
    counter = BadInputCounter()
    health = HealthTracker({"boiler": 60.0})
    ingest = SerialIngest(serial_dev("/x"), counter, health)
    data = b"t=21.5,p=1.2\n\xff\xfe\x00garbage\n" + b"x" * 200 + b"\nt=nan\nt=22\n"
    readings = ingest.feed(data[:7], 1.0, 1.0) + ingest.feed(data[7:], 2.0, 2.0)
    assert triples(readings) == [("boiler", "t", 21.5), ("boiler", "p", 1.2), ("boiler", "t", 22.0)]
    assert counter.by_reason("boiler") == {"not_utf8": 1, "line_too_long": 1, "not_finite": 1}
    assert health.state("boiler", 3.0) is DeviceState.ONLINE


class FakePort:
    """An in-memory port: serves chunks, then fails like an unplugged adapter."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.closed = False
        self.written: list[bytes] = []

    @property
    def in_waiting(self) -> int:
        return len(self.chunks[0]) if self.chunks else 0

    def read(self, size: int = 1) -> bytes:
        if not self.chunks:
            raise OSError(5, "Input/output error")
        chunk = self.chunks.pop(0)
        if size < len(chunk):
            self.chunks.insert(0, chunk[size:])
            chunk = chunk[:size]
        return chunk

    def write(self, data: bytes, /) -> int:
        self.written.append(data)
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


async def test_source_with_fake_ports_reconnects() -> None:
    ports = [FakePort([b"t=1\n", b"t=2\n"]), FakePort([b"t=3\n"])]
    opened: list[FakePort] = []

    def opener(path: str, baud: int) -> FakePort:
        if not ports:
            raise SourceError(f"cannot open {path}")
        opened.append(ports.pop(0))
        return opened[-1]

    collector = Collector()
    source = SerialSource(serial_dev("/dev/fake"), collector, opener=opener, rand=lambda: 0.0)
    task = asyncio.create_task(source.run())
    await collector.wait_for(3, within=5)
    await until(lambda: source.losses == 2, within=5)  # the second port runs dry after its reading
    source.stop()
    await asyncio.wait_for(task, 5)
    assert [r.value for r in collector.readings] == [1.0, 2.0, 3.0]
    assert (source.opens, source.losses) == (2, 2)
    assert all(p.closed for p in opened)


@contextlib.asynccontextmanager
async def run_source(source: SerialSource) -> AsyncIterator[SerialSource]:
    task = asyncio.create_task(source.run())
    try:
        await until(lambda: source.connected)
        yield source
    finally:
        source.stop()
        await asyncio.wait_for(task, 10)


@pytest.mark.serial
async def test_pty_readings_garbage_and_replug(tmp_path: Path) -> None:
    link = tmp_path / "by-id" / "usb-edgegw_boiler-if00-port0"
    collector = Collector()
    with PtyDevice(link) as device:
        source = SerialSource(serial_dev(link), collector)
        async with run_source(source):
            device.write(b"t=20.5,hum=40\n\xff\x00\x80binary\n" + b"z" * 100 + b"\nt=21\n")
            await collector.wait_for(3)
            assert source.counter.by_reason("boiler") == {"not_utf8": 1, "line_too_long": 1}
            first_pty = device.slave_name
            # USB unplugged: the reads fail; a new adapter appears at the same path
            device.unplug()
            await until(lambda: not source.connected)
            device.plug()
            assert device.slave_name is not None
            await until(lambda: source.connected)
            device.write(b"t=22\n")
            await collector.wait_for(4)
        assert (source.opens, source.losses) == (2, 1)
        assert device.plugs == 2
        assert first_pty is not None
    assert triples(collector.readings) == [
        ("boiler", "t", 20.5), ("boiler", "hum", 40.0), ("boiler", "t", 21.0), ("boiler", "t", 22.0),
    ]


class RefusingSink(Collector):
    """A sink that raises on one metric. Like the runtime's, it runs every reading of a batch
    (rules) before it keeps the batch (spool): a refused reading refuses the whole call."""

    def __init__(self, refuse: str) -> None:
        super().__init__()
        self.refuse = refuse
        self.calls = 0

    def __call__(self, batch: SourceBatch, /) -> None:
        self.calls += 1
        for reading in batch.readings:
            if reading.metric == self.refuse:
                raise ValueError(f"cannot handle {reading.metric}={reading.value}")
        super().__call__(batch)


@pytest.mark.serial
async def test_a_reading_the_handler_refuses_is_counted_and_the_others_arrive(tmp_path: Path) -> None:
    link = tmp_path / "by-id" / "usb-edgegw_boiler-if00-port0"
    sink = RefusingSink("bad")
    with PtyDevice(link) as device, capture_logs() as logs:
        source = SerialSource(serial_dev(link), sink)
        async with run_source(source):
            device.write(b"t=20.5,bad=1,hum=40\n")  # one line: one batch, the bad reading in the middle
            await sink.wait_for(2, within=10)
            device.write(b"t=21,bad=2\nt=22\n")  # the source goes on, and so do the rest
            await sink.wait_for(4, within=10)
            assert source.connected
        assert source.losses == 0
    assert triples(sink.readings) == [
        ("boiler", "t", 20.5), ("boiler", "hum", 40.0), ("boiler", "t", 21.0), ("boiler", "t", 22.0),
    ]  # fmt: skip
    assert source.counter.by_reason("boiler") == {"handler_error": 2}
    logged = [e for e in logs if e.get("reason") == "handler_error"]
    assert len(logged) == 1  # rate limited: one line per device and interval
    assert logged[0]["device"] == "boiler"
    assert logged[0]["log_level"] == "warning"
    assert "cannot handle bad=1" in logged[0]["detail"]


@pytest.mark.serial
async def test_port_missing_at_start_then_appears(tmp_path: Path) -> None:
    link = tmp_path / "late"
    collector = Collector()
    source = SerialSource(serial_dev(link, profile="json"), collector)
    task = asyncio.create_task(source.run())
    await asyncio.sleep(0.3)
    assert not source.connected
    with PtyDevice(link) as device:
        await until(lambda: source.connected)
        device.write(b'{"temperature": 19.5}\n')
        await collector.wait_for(1)
    source.stop()
    await asyncio.wait_for(task, 10)
    assert triples(collector.readings) == [("boiler", "temperature", 19.5)]


@pytest.mark.serial
def test_serial_actuator_writes_a_line_to_the_pty(tmp_path: Path) -> None:
    with PtyDevice(tmp_path / "relay") as device:
        writer = SerialLineWriter(str(device.link), 9600)
        writer.write_line(b"relay=1,on=ON\n")
        got = b""
        for _ in range(50):
            got += device.read(0.1)
            if got.endswith(b"\n"):
                break
        assert got == b"relay=1,on=ON\n"
        writer.close()
    with pytest.raises(ActuatorError, match="cannot write"):
        SerialLineWriter(str(tmp_path / "gone"), 9600).write_line(b"x\n")


def test_open_serial_missing_port_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="cannot open serial port"):
        open_serial(str(tmp_path / "nope"), 9600)


async def test_cancelling_the_source_ends_its_thread() -> None:
    def opener(path: str, baud: int) -> FakePort:
        raise SourceError("no port")

    source = SerialSource(serial_dev("/dev/none"), Collector(), opener=opener)
    task = asyncio.create_task(source.run())
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert source._stop.is_set()
