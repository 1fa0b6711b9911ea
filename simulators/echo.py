"""Simulated actuators: lights, fans and thermostats that obey commands and report state.

They listen where real devices listen and answer where real devices answer, so the
gateway's read-back (``confirm:``) sees its commands confirmed:

- Zigbee2MQTT: ``<base>/<name>/set`` (JSON) -> state JSON on ``<base>/<name>``;
- Tasmota: ``cmnd/<name>/<Key>`` (text) -> ``{"<Key>": value}`` on ``stat/<name>/RESULT``.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections import Counter
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

__all__ = ["EchoActuators"]


class EchoActuators:
    """``with EchoActuators(host, port): ...``; ``states`` holds what each device is doing."""

    def __init__(self, host: str, port: int, *, zigbee_base: str = "zigbee2mqtt") -> None:
        self.host = host
        self.port = port
        self.base = zigbee_base
        self.states: dict[str, dict[str, Any]] = {}
        self.commands: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"edgegw-echo-{uuid.uuid4().hex[:6]}"
        )
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._client.on_subscribe = lambda *_a: self._ready.set()

    def start(self, timeout: float = 10.0) -> EchoActuators:
        self._client.connect(self.host, self.port)
        self._client.loop_start()
        if not self._ready.wait(timeout):
            raise ConnectionError(f"echo actuators: no subscription on {self.host}:{self.port}")
        return self

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> EchoActuators:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def _on_connect(self, client: mqtt.Client, *_args: object) -> None:
        client.subscribe([(f"{self.base}/+/set", 1), ("cmnd/+/+", 1)])

    def _on_message(self, client: mqtt.Client, _userdata: object, msg: mqtt.MQTTMessage) -> None:
        parts = msg.topic.split("/")
        if len(parts) == 3 and parts[0] == self.base and parts[2] == "set":
            name = parts[1]
            try:
                change = json.loads(msg.payload)
            except ValueError:
                return
            if not isinstance(change, dict):
                return
            state = self._apply(name, change)
            client.publish(f"{self.base}/{name}", json.dumps(state), qos=0)
        elif len(parts) == 3 and parts[0] == "cmnd":
            name, key = parts[1], parts[2]
            value = msg.payload.decode(errors="replace")
            self._apply(name, {key: value})
            client.publish(f"stat/{name}/RESULT", json.dumps({key: value}), qos=0)

    def _apply(self, name: str, change: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.commands[name] += 1
            state = self.states.setdefault(name, {})
            state.update(change)
            return dict(state)
