"""``/metrics`` and ``/healthz`` of an in-process runtime over real HTTP: what they read from
SQLite is read off the event loop, so a slow disk never stalls it (issue 11)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bridge.spool import Spool, SpoolStats
from gateway.config import load_config
from gateway.http import Handler, HttpServer
from gateway.ledger import DeliveryLedger
from gateway.metrics import Observability
from gateway.runtime import Runtime
from gateway.sdnotify import Notifier
from tests.bridge.helpers import readings, spool_config

STUCK = 5.0
"""How long the fake slow disk waits for the test to release it (only reached when the loop is stuck)."""


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    config = tmp_path / "edgegw.yaml"
    config.write_text(f"gateway: {{id: metrics-test, state_dir: {tmp_path / 'state'}}}\nhttp: {{port: 0}}\n")
    rt = Runtime(load_config(config), gateway_id="metrics-test", notifier=Notifier({}), environ={})
    rt.spool = Spool.open(spool_config(tmp_path))
    rt.spool.append_many(readings(3))
    rt.spool.flush()
    rt.pipeline.attach(rt.spool, rt.engine, DeliveryLedger())
    rt.state.ready_mono = time.monotonic()  # as after start-up: /healthz then answers 200
    yield rt
    rt.spool.close()


async def _get(port: int, path: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    await writer.drain()
    response = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


class SlowDisk:
    """Spool stats that hang until the test releases them, as on an SD card that stalls."""

    def __init__(self, stats: Callable[[], SpoolStats]) -> None:
        self._stats = stats
        self.entered = threading.Event()
        self.release = threading.Event()
        self.calls: list[tuple[int, bool]] = []  # (thread, released before STUCK ran out)

    def __call__(self) -> SpoolStats:
        self.entered.set()
        released = self.release.wait(STUCK)
        self.calls.append((threading.get_ident(), released))
        return self._stats()


async def _serve(obs: Observability) -> HttpServer:
    routes: dict[str, Handler] = {"/metrics": obs.metrics, "/healthz": obs.healthz, "/rules": obs.rules}
    server = HttpServer("127.0.0.1", 0, routes)
    await server.start()
    return server


@pytest.mark.parametrize("path", ["/metrics", "/healthz"])
async def test_a_slow_spool_query_never_stalls_the_event_loop(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    assert runtime.spool is not None
    disk = SlowDisk(runtime.spool.stats)
    monkeypatch.setattr(runtime.spool, "stats", disk)
    server = await _serve(Observability(runtime))
    try:
        scrape = asyncio.create_task(_get(server.port, path))
        assert await asyncio.to_thread(disk.entered.wait, 30)
        # the query hangs; the loop still serves another request, and only then frees the disk
        status, _ = await _get(server.port, "/rules")
        assert status == 200
        disk.release.set()
        status, body = await scrape
    finally:
        await server.close()
    assert status == 200
    assert disk.calls, "the spool was not queried"
    loop_thread = threading.get_ident()
    assert all(thread != loop_thread for thread, _ in disk.calls), "a spool query ran on the event loop"
    assert all(released for _, released in disk.calls), "the event loop was stuck while the spool query hung"
    if path == "/metrics":
        samples = {s.name: s.value for f in text_string_to_metric_families(body.decode()) for s in f.samples}
        assert samples["edgegw_spool_depth"] == 3
        assert "process_resident_memory_bytes" in samples
    else:
        assert json.loads(body)["components"]["spool"]["depth"] == 3


async def test_scrapes_during_a_hung_query_share_it(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert runtime.spool is not None
    disk = SlowDisk(runtime.spool.stats)
    monkeypatch.setattr(runtime.spool, "stats", disk)
    obs = Observability(runtime)
    server = await _serve(obs)
    try:
        first = asyncio.create_task(_get(server.port, "/metrics"))
        assert await asyncio.to_thread(disk.entered.wait, 30)
        others = [asyncio.create_task(handler()) for handler in (obs.metrics, obs.healthz, obs.metrics)]
        await asyncio.sleep(0)  # each runs up to its wait on the read in flight
        disk.release.set()
        status, _ = await first
        statuses = [status] + [response[0] for response in await asyncio.gather(*others)]
    finally:
        await server.close()
    assert statuses == [200, 200, 200, 200]
    assert len(disk.calls) == 1, "each request queued a query of its own"


async def test_refused_systemd_notifications_are_counted(runtime: Runtime, tmp_path: Path) -> None:
    runtime.notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})  # systemd's socket vanished
    runtime.notifier.watchdog()
    runtime.notifier.status("still here")
    _status, _type, body = await Observability(runtime).metrics()
    runtime.notifier.close()
    samples = {s.name: s.value for f in text_string_to_metric_families(body.decode()) for s in f.samples}
    assert samples["edgegw_sdnotify_errors_total"] == 2
