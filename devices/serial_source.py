"""The serial source: lines from a serial port (pyserial) into readings.

:class:`SerialIngest` is the pure core (framing, decoding, counting: bytes in, readings
out). :class:`SerialSource` is the thin edge: a worker thread that opens the port,
reads what is there, feeds the core and hands readings to the sink on the event loop.
When the port disappears (USB unplugged: reads fail with EIO, or the device node is
gone) it closes the port, logs it and reopens it with jittered exponential backoff.
Readings from serial need no acknowledgement: their batches settle with nothing to send.

A sink that raises loses nothing silently: the source hands that batch again one reading
at a time, so one reading the sink cannot take does not take the others with it, and
counts each reading that still raises as bad input (reason ``handler_error``, logged at
most once per interval per device). A sink that raises after it took part of a batch
sees those readings twice; the runtime's runs the rules of each reading, then spools the
batch, so the spool still gets each reading once.

Name ports by ``/dev/serial/by-id/usb-<vendor>_<product>_<serial>-if00-port0``, which
udev keeps stable across replugs and reboots (``/dev/ttyUSB0`` is not); see
docs/devices.md.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Protocol

import structlog

from common.backoff import Backoff
from devices.config import DeviceConfig
from devices.errors_counter import BadInputCounter
from devices.framing import LineFramer
from devices.health import HealthTracker
from devices.profiles import Decoder, build_decoder
from devices.sink import BatchSink, SourceBatch
from gateway.errors import ActuatorError, PayloadError, SourceError
from gateway.model import Reading

__all__ = ["SerialIngest", "SerialLineWriter", "SerialPort", "SerialSource", "open_serial"]

_log = structlog.get_logger("edgegw.devices.serial")

READ_TIMEOUT = 0.1
HANDLER_ERROR = "handler_error"
"""The bad-input reason of a reading the sink raised on."""


class SerialPort(Protocol):
    """What the source needs of a port (pyserial's ``Serial`` has it)."""

    @property
    def in_waiting(self) -> int: ...

    def read(self, size: int = 1) -> bytes: ...

    def write(self, data: bytes, /) -> int | None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


PortOpener = Callable[[str, int], SerialPort]


def open_serial(path: str, baud: int) -> SerialPort:
    """Open ``path`` with pyserial (8N1, no flow control). Raises :class:`SourceError`."""
    import serial  # noqa: PLC0415 - only the real edge needs pyserial

    try:
        port: SerialPort = serial.Serial(path, baud, timeout=READ_TIMEOUT, write_timeout=2.0,
                                         exclusive=False)
    except (serial.SerialException, OSError, ValueError) as exc:
        raise SourceError(f"cannot open serial port {path}: {exc}") from exc
    return port


class SerialIngest:
    """Framing, decoding and counting for one serial device: ``feed(bytes) -> readings``."""

    __slots__ = ("_decoder", "_framer", "counter", "device_id", "health", "lines")

    def __init__(self, device: DeviceConfig, counter: BadInputCounter,
                 health: HealthTracker | None = None) -> None:
        if device.serial is None:
            raise ValueError(f"device {device.id} has no serial settings")
        self.device_id = device.id
        self._framer = LineFramer(device.serial.max_line)
        self._decoder: Decoder = build_decoder(device)
        self.counter = counter
        self.health = health
        self.lines = 0

    def feed(self, data: bytes, now: float, mono: float) -> list[Reading]:
        readings: list[Reading] = []
        device = self.device_id
        for frame in self._framer.feed(data):
            self.lines += 1
            if frame.error is not None:
                self.counter.record(device, frame.error, "", mono, transport="serial")
                continue
            try:
                readings += self._decoder.decode("", frame.data, now)
            except PayloadError as exc:
                self.counter.record(device, exc.reason, exc.detail, mono, transport="serial")
                continue
            if self.health is not None:
                self.health.seen(device, mono, now)
        return readings

    def reset(self) -> None:
        self._framer.reset()


class SerialSource:
    """Readings from one serial device. ``await source.run()``; ``source.stop()`` to end."""

    def __init__(
        self,
        device: DeviceConfig,
        sink: BatchSink,
        *,
        counter: BadInputCounter | None = None,
        health: HealthTracker | None = None,
        opener: PortOpener = open_serial,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] | None = None,
    ) -> None:
        if device.serial is None:
            raise ValueError(f"device {device.id} has no serial settings")
        self.device = device
        self.path = device.serial.port
        self.baud = device.serial.baud
        self.counter = counter or BadInputCounter()
        self.ingest = SerialIngest(device, self.counter, health)
        self._sink = sink
        self._opener = opener
        self._wall = wall_clock
        self._mono = monotonic
        self._backoff = Backoff(device.serial.reconnect_min, device.serial.reconnect_max, rand=rand)
        self._stop = threading.Event()
        self._log = _log.bind(device=device.id, transport="serial", port=self.path)
        self.opens = 0
        self.losses = 0
        self._connected = False

    @property
    def connected(self) -> bool:
        """True while the port is open."""
        return self._connected

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await asyncio.to_thread(self._worker, loop)
        except asyncio.CancelledError:
            self.stop()  # the worker thread ends at its next read timeout
            raise

    def stop(self) -> None:
        self._stop.set()

    # ------------------------------------------------------------------ worker thread
    def _worker(self, loop: asyncio.AbstractEventLoop) -> None:
        missing_logged = False
        while not self._stop.is_set():
            try:
                port = self._opener(self.path, self.baud)
            except SourceError as exc:
                delay = self._backoff.next()
                if not missing_logged:
                    self._log.warning("serial port unavailable", error=str(exc), retry_in=round(delay, 2))
                    missing_logged = True
                self._stop.wait(delay)
                continue
            missing_logged = False
            self.opens += 1
            self._connected = True
            self.ingest.reset()
            self._log.info("serial port open", baud=self.baud, opens=self.opens)
            try:
                self._read_loop(port, loop)
            except OSError as exc:  # pyserial's SerialException is an OSError
                self.losses += 1
                self._log.warning("serial port lost", error=str(exc))
            finally:
                self._connected = False
                try:
                    port.close()
                except OSError:
                    self._log.debug("serial close failed")
            if not self._stop.is_set():
                self._stop.wait(self._backoff.next())

    # ------------------------------------------------------------------ event loop
    def _deliver(self, readings: list[Reading]) -> None:
        """Hand a batch to the sink (on the event loop); see the module docstring."""
        try:
            self._sink(SourceBatch(readings, received=self._mono()))
        except Exception as exc:  # noqa: BLE001 - not lost: each reading is tried alone, and counted
            if len(readings) == 1:
                self._refused(readings[0], exc)
                return
            for reading in readings:
                try:
                    self._sink(SourceBatch([reading], received=self._mono()))
                except Exception as one:  # noqa: BLE001 - counted and logged; the others go on
                    self._refused(reading, one)

    def _refused(self, reading: Reading, exc: Exception) -> None:
        detail = f"{reading.metric}={reading.value!r}: {exc!r}"
        self.counter.record(self.device.id, HANDLER_ERROR, detail, self._mono(), transport="serial")

    # ------------------------------------------------------------------ worker thread
    def _read_loop(self, port: SerialPort, loop: asyncio.AbstractEventLoop) -> None:
        got_data = False
        while not self._stop.is_set():
            data = port.read(1)
            if not data:
                continue
            waiting = port.in_waiting
            if waiting:
                data += port.read(waiting)
            if not got_data:
                got_data = True
                self._backoff.reset()
            readings = self.ingest.feed(data, self._wall(), self._mono())
            if readings:
                try:
                    loop.call_soon_threadsafe(self._deliver, readings)
                except RuntimeError:  # the event loop is gone: the gateway is shutting down
                    self._stop.set()


class SerialLineWriter:
    """The serial actuator's port: writes command lines, (re)opening the port as needed."""

    def __init__(self, path: str, baud: int, opener: PortOpener = open_serial) -> None:
        self.path = path
        self.baud = baud
        self._opener = opener
        self._port: SerialPort | None = None

    def write_line(self, line: bytes) -> None:
        try:
            if self._port is None:
                self._port = self._opener(self.path, self.baud)
            self._port.write(line)
            self._port.flush()
        except (OSError, SourceError) as exc:
            self.close()
            raise ActuatorError(f"cannot write to serial port {self.path}: {exc}") from exc

    def close(self) -> None:
        port, self._port = self._port, None
        if port is not None:
            try:
                port.close()
            except OSError:
                _log.debug("serial close failed", port=self.path)
