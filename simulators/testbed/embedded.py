"""An embedded MQTT 3.1.1 broker (amqtt) for the demo on machines without Mosquitto.

It runs on its own event loop in a daemon thread, on a free loopback port, anonymous,
in memory only. It is no stand-in for Mosquitto in the tests: it exists so that
``edgegw demo`` needs no external service at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from concurrent.futures import Future
from types import TracebackType
from typing import Any

from gateway.errors import TestBedError
from simulators.testbed._process import free_port

__all__ = ["EmbeddedBroker", "embedded_available"]

HOST = "127.0.0.1"


def embedded_available() -> bool:
    try:
        import amqtt.broker  # noqa: F401, PLC0415
    except ImportError:
        return False
    return True


class EmbeddedBroker:
    """``with EmbeddedBroker() as broker: ... broker.port``"""

    def __init__(self, port: int | None = None) -> None:
        self.host = HOST
        self.port = port or free_port()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._broker: Any = None

    def start(self, timeout: float = 15.0) -> EmbeddedBroker:
        try:
            from amqtt.broker import Broker  # noqa: PLC0415 - optional (demo extra)
        except ImportError as exc:
            raise TestBedError(
                "no Mosquitto and no amqtt: install Mosquitto (apt-get install mosquitto) "
                "or the demo extra (pip install 'edgegw[demo]')"
            ) from exc
        for name in ("amqtt", "transitions"):
            logging.getLogger(name).setLevel(logging.ERROR)  # its INFO lines would flood the view
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        loop = asyncio.new_event_loop()
        started: Future[None] = Future()

        def serve() -> None:
            asyncio.set_event_loop(loop)
            try:
                self._broker = Broker(config, loop=loop)
                loop.run_until_complete(self._broker.start())
            except Exception as exc:  # noqa: BLE001 - handed to the starting thread, raised there
                started.set_exception(exc)
                return
            started.set_result(None)
            loop.run_forever()

        self._loop = loop
        self._thread = threading.Thread(target=serve, name="edgegw-embedded-broker", daemon=True)
        self._thread.start()
        try:
            started.result(timeout)
        except Exception as exc:
            raise TestBedError(f"the embedded MQTT broker did not start: {exc}") from exc
        return self

    def stop(self) -> None:
        loop, broker = self._loop, self._broker
        if loop is None or broker is None:
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(broker.shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self._loop = self._broker = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
