"""What the gateway does at run time, with the libraries it uses, for tests/systemd/test_sandbox.py.

Run under strace by that test: its system calls, socket families and memory mappings must
fit the sandbox of systemd/edgegw.service. Usage: python sandbox_workload.py HOST PORT WORKDIR
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
import urllib.request
from pathlib import Path

import aiomqtt
import confluent_kafka
import paho.mqtt.client as mqtt
import serial
import structlog
from paho.mqtt.enums import CallbackAPIVersion

from gateway.errors import PlatformError
from gateway.http import HttpServer
from gateway.identity import resolve_gateway_id
from gateway.logs import configure_logging
from gateway.metrics import ProcessMetrics, render
from gateway.sdnotify import Notifier
from gateway.timesync import ClockSync, SystemClockProbe


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        body: bytes = response.read()
    return body


def main() -> None:
    host, port, workdir = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    configure_logging(json=True)
    log = structlog.get_logger("workload")

    # state directory: the gateway id, a WAL spool with a group commit
    gateway_id = resolve_gateway_id(None, workdir)
    db = sqlite3.connect(workdir / "spool.db")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE IF NOT EXISTS spool (seq INTEGER PRIMARY KEY, body BLOB)")
    with db:
        db.executemany("INSERT INTO spool (body) VALUES (?)", [(b"x" * 100,) for _ in range(500)])
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()

    # the wall clock probe (adjtimex is refused in the unit: the probe falls back)
    ClockSync(SystemClockProbe()).synchronized  # noqa: B018 - the probe is the point

    # metrics: the gateway's HTTP listener and its process metrics (read /proc/stat and /proc/self)
    async def scrape() -> bytes:
        server = HttpServer(
            "127.0.0.1", 0, {"/metrics": lambda: (200, "text/plain", render(ProcessMetrics().collect()))}
        )
        await server.start()
        try:
            return await asyncio.to_thread(_get, f"http://127.0.0.1:{server.port}/metrics")
        finally:
            await server.close()

    assert b"process_resident_memory_bytes" in asyncio.run(scrape())

    # a serial port (a pty stands in for /dev/ttyUSB0)
    controller, device = os.openpty()
    port_ = serial.Serial(os.ttyname(device), 115200, timeout=1)
    os.write(controller, b"t=21.5\n")
    assert port_.readline() == b"t=21.5\n"
    port_.close()
    os.close(controller)
    os.close(device)

    # MQTT: paho (QoS 1, manual acks) and aiomqtt
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{gateway_id}-sandbox")
    client.connect(host, port)
    client.loop_start()
    client.subscribe("sandbox/#", qos=1)
    client.publish("sandbox/a", "1", qos=1).wait_for_publish(10)
    client.loop_stop()
    client.disconnect()

    async def actuate() -> None:
        async with aiomqtt.Client(host, port) as actuator:
            await actuator.publish("sandbox/ac/set", '{"state": "on"}', qos=1)

    asyncio.run(actuate())

    # Kafka: librdkafka threads, DNS, a refused connection, a transactional producer
    producer = confluent_kafka.Producer(
        {"bootstrap.servers": "localhost:1", "message.timeout.ms": 1000, "log_level": 0}
    )
    producer.produce("sandbox", b"x")
    producer.flush(3)
    transactional = confluent_kafka.Producer(
        {"bootstrap.servers": "127.0.0.1:1", "transactional.id": gateway_id, "log_level": 0}
    )
    del transactional

    # sd_notify to a socket nobody listens on: refused, mapped to PlatformError
    try:
        Notifier({"NOTIFY_SOCKET": "@edgegw-sandbox-nobody"}).ready()
    except PlatformError as exc:
        log.info("notify refused", error=str(exc))
    print("workload done")


if __name__ == "__main__":
    main()
