"""Faults inside the gateway while a QoS 1 stream flows (issue 11), against the real
Mosquitto and Kafka, with the runtime in this process so that faults can be put into it.

- The spool fails three ways (a write that fails, an exception in its writer thread, its
  file deleted under it): each time the gateway recovers by itself, ``/healthz`` goes 503
  (with the reason) and back to 200, the broker's PUBACK flow resumes, and a
  read_committed consumer finds every reading, rule event and command exactly once, as an
  uninterrupted run over the same readings gives them.
- SIGHUP (a reload) while the spool is failing does not stop the gateway.
- Poison: a payload that makes a decoder raise and a reading that makes a rule raise are
  counted, dead-lettered once, acknowledged, and never come back or stop the gateway.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from bench.chaoslib import KafkaWatch, RuleRun, StreamPublisher, read_committed, settle
from bridge.spool import Spool
from gateway.config import load_config
from gateway.errors import SpoolError
from gateway.runtime import Runtime
from gateway.sdnotify import Notifier
from simulators.testbed import KafkaEndpoint, Mosquitto
from tests.gateway.exactness import compare, reference, tally

pytestmark = [pytest.mark.mqtt, pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(300)]

DEVICES = 10
MESSAGES = 8000
RATE = 1000.0


class InProcessGateway:
    """``Runtime`` on an event loop of its own in a thread, so a test can reach into it."""

    def __init__(self, config_path: Path) -> None:
        self.loaded = load_config(config_path)
        self.ready = threading.Event()
        self.runtime: Runtime | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="in-process-gateway", daemon=True)

    def start(self, within: float = 60.0) -> InProcessGateway:
        self._thread.start()
        assert self.ready.wait(within), f"not ready within {within} s: {self.error!r}"
        return self

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:
            self.error = exc

    async def _run(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.runtime = Runtime(self.loaded, gateway_id=self.loaded.config.gateway.id or "faults",
                               notifier=Notifier({}), on_ready=self.ready.set, environ={})  # fmt: skip
        await self.runtime.run()

    @property
    def rt(self) -> Runtime:
        assert self.runtime is not None
        return self.runtime

    def on_loop(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the gateway's event loop and return what it returned."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(_call(fn), self.loop).result(10)

    def stop(self, within: float = 30.0) -> None:
        if self.loop is not None and self.runtime is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.runtime.stop)
        self._thread.join(within)
        assert not self._thread.is_alive(), "the gateway did not stop"
        assert self.error is None, f"the gateway ended with {self.error!r}"

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()


async def _call(fn: Callable[[], Any]) -> Any:
    return fn()


def healthz(port: int) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


class HealthWatch(threading.Thread):
    """Polls ``/healthz`` every 10 ms and keeps each change of status with its reasons."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True, name="health-watch")
        self.port = port
        self.changes: list[tuple[int, list[str]]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        last = None
        while not self.halt.is_set():
            try:
                status, body = healthz(self.port)
            except (OSError, ValueError):
                status, body = 0, {"reasons": ["no answer"]}
            if status != last:
                self.changes.append((status, list(body.get("reasons", []))))
                last = status
            time.sleep(0.01)

    def wait(self, status: int, after: int, within: float = 30.0) -> int:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            for i, (s, _reasons) in enumerate(self.changes[after:], start=after):
                if s == status:
                    return i
            time.sleep(0.01)
        raise AssertionError(f"/healthz never answered {status} within {within} s: {self.changes}")


# ---------------------------------------------------------------------- the faults
def _raise_once(obj: Any, method: str, exc: Exception) -> None:
    """The next call of ``obj.method`` raises ``exc``; the one after is the real one again."""
    real = getattr(obj, method)

    def once(*_args: Any) -> Any:
        setattr(obj, method, real)
        raise exc

    setattr(obj, method, once)


def failing_write(gw: InProcessGateway) -> None:
    """The next write fails with an I/O error (a bad sector, a pulled SD card)."""
    spool = gw.rt.spool
    assert spool is not None
    _raise_once(spool._store, "insert", sqlite3.OperationalError("disk I/O error"))


def writer_exception(gw: InProcessGateway) -> None:
    """A bug: the writer thread raises something nobody planned for."""
    spool = gw.rt.spool
    assert spool is not None
    _raise_once(spool._writer, "group", KeyError("injected bug in the spool writer"))


def file_deleted(gw: InProcessGateway) -> None:
    """Someone deletes the spool (``rm -rf /var/lib/edgegw/*`` by mistake)."""
    spool = gw.rt.spool
    assert spool is not None
    for suffix in ("", "-wal", "-shm"):
        Path(f"{spool.path}{suffix}").unlink(missing_ok=True)


FAULTS: list[tuple[str, Callable[[InProcessGateway], None]]] = [
    ("a failing write", failing_write),
    ("an exception in the writer thread", writer_exception),
    ("the spool file deleted", file_deleted),
]


def test_spool_faults_under_a_qos1_stream_recover_with_every_event_exactly_once(
    mosquitto: Mosquitto, kafka: KafkaEndpoint, tmp_path: Path
) -> None:
    run = RuleRun(tmp_path / "run", mosquitto, kafka, devices=DEVICES)
    gw = InProcessGateway(run.config_path).start()
    health = HealthWatch(run.http_port)
    watch = KafkaWatch(kafka.bootstrap, run.topics["readings"])
    points = [(i + 1) * MESSAGES // (len(FAULTS) + 1) for i in range(len(FAULTS))]
    pub = StreamPublisher(mosquitto, run.message, MESSAGES, RATE, limit=points[0])
    notes: list[str] = []
    try:
        health.start()
        health.wait(200, 0)
        watch.start()
        pub.start()
        for i, (name, inject) in enumerate(FAULTS):
            while len(pub.acked_at) < points[i]:  # the stream waits at the fault point, all acked
                assert pub.is_alive(), "the publisher stopped"
                time.sleep(0.01)
            restarts = gw.rt.state.restarts["spool"]
            mark = len(health.changes)
            inject(gw)
            nxt = points[i + 1] if i + 1 < len(points) else MESSAGES
            pub.allow(nxt)  # traffic on: the fault shows at the next write
            down = health.wait(503, mark)
            up = health.wait(200, down)
            # the gateway's own PUBACKs (not the publisher's): the new source acknowledges what
            # keeps coming (the file deleted: the old one acked the first second's worth)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                source = gw.rt.mqtt_source
                if source is not None and source.acked >= 200:
                    break
                time.sleep(0.01)
            source = gw.rt.mqtt_source
            assert source is not None
            assert source.acked >= 200, f"after {name}: the gateway's PUBACK flow did not resume"
            assert gw.rt.state.restarts["spool"] == restarts + 1, name
            notes.append(f"{name}: 503 {health.changes[down][1]} then 200 at change {up}")
        pub.join(120)
        assert not pub.is_alive(), "the publisher did not finish"
        acked_seqs = sorted(pub.acked_seqs())
        assert len(acked_seqs) == MESSAGES
        settle(watch, {(run.device(s), "seq", s): 0.0 for s in acked_seqs}, timeout=120)
        assert gw.alive
        gw.stop()
    finally:
        pub.halt.set()
        health.halt.set()
        watch.stop()
        if gw.alive:
            gw.stop()
    kafka_side = tally(run, *(read_committed(kafka.bootstrap, run.topics[k]) for k in
                              ("readings", "events", "commands")))  # fmt: skip
    totals, problems = compare(reference(run, acked_seqs), kafka_side)
    report = "\n".join([*notes, *totals])
    print(report)
    assert not problems, report + "\n" + "\n".join(problems[:6])
    assert kafka_side.ce_id_dups == 0, report


def test_a_reload_while_the_spool_is_failing_keeps_the_gateway_running(
    mosquitto: Mosquitto, kafka: KafkaEndpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = RuleRun(tmp_path / "run", mosquitto, kafka, devices=2)
    gw = InProcessGateway(run.config_path).start()
    try:
        reopen = threading.Event()
        real_open = Spool.open

        def refuse(*args: Any, **kwargs: Any) -> Spool:
            if not reopen.is_set():
                raise SpoolError("cannot open spool: unable to open database file")
            return real_open(*args, **kwargs)

        monkeypatch.setattr(Spool, "open", staticmethod(refuse))
        writer_exception(gw)
        gw.on_loop(gw.rt.pipeline.save_summary)  # something to write: the writer fails
        deadline = time.monotonic() + 10
        while gw.rt.spool is not None and gw.rt.spool.writer_alive and time.monotonic() < deadline:
            time.sleep(0.01)
        status, body = healthz(run.http_port)
        assert status == 503, body
        gw.on_loop(gw.rt.request_reload)  # SIGHUP while the spool cannot be reopened
        time.sleep(1.5)
        assert gw.alive
        assert gw.rt.state.reloads + gw.rt.state.reload_errors >= 1
        reopen.set()
        deadline = time.monotonic() + 60
        while healthz(run.http_port)[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        status, body = healthz(run.http_port)
        assert status == 200, body
    finally:
        gw.stop()


def test_poison_input_is_dead_lettered_once_and_never_stops_the_gateway(
    mosquitto: Mosquitto, kafka: KafkaEndpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A decoder that raises on one payload, a rule that raises on one value: each message is
    counted, dead-lettered with its topic and payload, acknowledged; the gateway stays up,
    and after a restart nothing comes back."""
    from devices import profiles  # noqa: PLC0415
    from rules import engine as engine_module  # noqa: PLC0415

    run = RuleRun(tmp_path / "run", mosquitto, kafka, devices=2)
    poison_decoder = b'{"seq":-1,"t":1}'
    poison_rule_value = 77.5

    real_decode = profiles.JsonDecoder.decode

    def decode(self: Any, topic: str, payload: bytes, now: float) -> Any:
        if payload == poison_decoder:
            raise ZeroDivisionError("a bug in a profile")
        return real_decode(self, topic, payload, now)

    real_on_reading = engine_module.RuleEngine.on_reading

    def on_reading(self: Any, reading: Any, now: Any) -> Any:
        if reading.value == poison_rule_value:
            raise ValueError("a bug in a rule")
        return real_on_reading(self, reading, now)

    monkeypatch.setattr(profiles.JsonDecoder, "decode", decode)
    monkeypatch.setattr(engine_module.RuleEngine, "on_reading", on_reading)
    topic = run.message(0)[0]
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"poison-{os.getpid()}")
    client.connect(mosquitto.host, mosquitto.port)
    client.loop_start()
    for _ in range(2):  # two lives of the gateway: the poison must not come back in the second
        gw = InProcessGateway(run.config_path).start()
        try:
            if _ == 0:
                rule_poison = b'{"seq":-2,"t":%r}' % poison_rule_value
                for payload in (poison_decoder, rule_poison, b'{"seq":1,"t":20}'):
                    client.publish(topic, payload, qos=1).wait_for_publish(10)
                deadline = time.monotonic() + 20
                while sum(gw.rt.state.poison.values()) < 2 and time.monotonic() < deadline:
                    time.sleep(0.05)
            time.sleep(1.0)
            assert gw.alive
            poison = dict(gw.rt.state.poison)
            assert healthz(run.http_port)[0] == 200
        finally:
            gw.stop()
        if _ == 0:
            assert poison == {("dev-00", "decoder_error"): 1, ("dev-00", "rule_error"): 1}, poison
        else:
            assert poison == {}, f"poison came back after a restart: {poison}"
    client.loop_stop()
    client.disconnect()
    with sqlite3.connect(run.spool) as db:
        dead = db.execute("SELECT key, data, reason FROM dead_letters ORDER BY seq").fetchall()
    assert sorted((k, r) for k, _d, r in dead) == [(topic, "decoder_error"), (topic, "rule_error")]
    assert {r: d for _k, d, r in dead}["decoder_error"] == poison_decoder
