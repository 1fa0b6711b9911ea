"""The Home Assistant side of the broker: discovery, states, availability, commands.

Its own MQTT connection (client id ``<client_id>-ha``) with a last will: the broker marks
the gateway ``offline`` (retained, on ``<base>/availability``) when edgegw dies without
saying goodbye; a graceful stop says it itself. On every connect, and whenever Home
Assistant announces itself (``online`` on its status topic), edgegw publishes every
discovery config (retained) and every state again.

Once a second, on the event loop, it compares what the runtime knows with what it last
published and publishes what changed: the device states (the last value of each
metric, from the counters the pipeline keeps anyway), devices' availability (edgegw's
online tracking), the actuators' states (the commands sent to them) and the rule alarms
(fired or not). Nothing runs per reading. A new metric, a reload or a changed rule set
re-plans the discovery; a device or actuator that is gone gets an empty retained config
(the whole HA device) or a platform-only component (one entity), as HA asks. What was
published is kept in ``<state_dir>/homeassistant.json``, so this holds across restarts.

A message on an entity's command topic is checked (:func:`translate`), sent through the
actuator like a rule's command (``rule_id`` ``homeassistant``), logged and spooled for
Kafka. Retained messages on the command topics are cleared at connect: a command left on
the broker must never act when edgegw starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from paho.mqtt.enums import MQTTErrorCode

from devices.mqtt_client import InMessage, MqttLink
from gateway import __version__
from gateway.errors import CommandRefusedError
from gateway.homeassistant.commands import actuator_state, translate
from gateway.homeassistant.discovery import CommandTarget, Plan, RuleInfo, Topics, plan
from gateway.model import Command

if TYPE_CHECKING:
    from pydantic import SecretStr

    from devices.config import MqttConnection
    from gateway.runtime import Runtime
    from rules import RuleEngine

__all__ = ["HomeAssistantLink", "Published", "build_link", "rule_infos"]

_log = structlog.get_logger("edgegw.homeassistant")
STATE_FILE = "homeassistant.json"
TICK_S = 1.0


class Published:
    """The discovery topics edgegw published and their components, kept on disk."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.configs: dict[str, dict[str, str]] = {}
        try:
            data = json.loads(path.read_text())
            configs = data.get("configs", {}) if isinstance(data, dict) else {}
            self.configs = {str(t): {str(c): str(p) for c, p in cs.items()} for t, cs in configs.items()}
        except FileNotFoundError:
            pass
        except (OSError, ValueError, AttributeError) as exc:
            _log.warning("cannot read what was announced to home assistant; starting afresh", path=str(path),
                         error=str(exc))  # fmt: skip

    def save(self, configs: dict[str, dict[str, str]]) -> None:
        """Blocking (a small file, written atomically): call it off the loop."""
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"version": 1, "configs": configs}, indent=1, sort_keys=True))
        with tmp.open("rb") as handle:
            os.fsync(handle.fileno())
        tmp.replace(self.path)


def rule_infos(engine: RuleEngine) -> list[RuleInfo]:
    from rules.compiler import EmitAct, SetAct  # noqa: PLC0415

    out = []
    for rule in engine.rules:
        then = [a for a in rule.then if isinstance(a, SetAct)]
        offs = [(a.actuator, a.payload) for a in rule.else_ if isinstance(a, SetAct)]
        offs += [(a.actuator, a.revert) for a in then if a.revert]
        out.append(RuleInfo(
            id=rule.id, description=rule.description or "",
            emits=any(isinstance(a, EmitAct) for a in rule.then),
            sensors=tuple(sorted({leaf.sensor for leaf in rule.when_leaves})),
            on_sets=tuple((a.actuator, a.payload) for a in then), off_sets=tuple(offs),
        ))  # fmt: skip
    return out


class HomeAssistantLink:
    """``run()`` (supervised by the runtime) until ``close()``."""

    def __init__(self, runtime: Runtime, conn: MqttConnection, *, password: SecretStr | None = None) -> None:
        self.runtime = runtime
        settings = runtime.config.homeassistant
        self.topics = Topics(settings.base_topic or f"edgegw/{runtime.gateway_id}", settings.discovery_topic,
                             settings.status_topic)  # fmt: skip
        self.link = MqttLink(conn, password=password, client_id=f"{conn.client_id}-ha"[:64], persistent=False,
                             on_connected=self._on_connected, on_messages=self._on_messages,
                             name="homeassistant")  # fmt: skip
        self.link.client.will_set(self.topics.availability, b"offline", qos=1, retain=True)
        self.published = Published(runtime.state_dir / STATE_FILE)
        self.plan = Plan()
        self._plan_key: tuple[Any, ...] | None = None
        self._sent: dict[str, bytes] = {}
        self._merged: dict[str, dict[str, Any]] = {}
        self._commands_seen: dict[str, Command] = {}
        self._saving: asyncio.Future[None] | None = None
        self.commands: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()

    # ------------------------------------------------------------------ life cycle
    async def run(self) -> None:
        ticker = asyncio.ensure_future(self._ticker())
        try:
            await self.link.run()
        finally:
            ticker.cancel()

    async def close(self) -> None:
        """Say ``offline`` (the last will is for deaths), then disconnect."""
        if self.link.connected and self._publish(self.topics.availability, b"offline", retain=True):
            await asyncio.sleep(0.2)  # QoS 1: give the PUBACK a moment before DISCONNECT
        self.link.stop()
        if self._saving is not None:
            with contextlib.suppress(OSError):  # logged by _saved
                await self._saving

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            if self.link.connected:
                self.refresh()

    # ------------------------------------------------------------------ MQTT callbacks
    def _on_connected(self, _session_present: bool) -> None:
        self._sent.clear()
        self._replan()
        for topic in self.plan.commands:  # a retained command must never act at start
            self._publish(topic, b"", retain=True)
        self.link.client.subscribe([(self.topics.status, 1), (f"{self.topics.base}/actuators/#", 1)])
        self._publish(self.topics.availability, b"online", retain=True)
        self.refresh(force=True)

    def _on_messages(self, messages: list[InMessage]) -> None:
        for message in messages:
            if message.topic == self.topics.status:
                if message.payload.strip() == b"online":
                    _log.info("home assistant is online: announcing again", status_topic=self.topics.status)
                    self._sent.clear()
                    self.refresh(force=True)
                continue
            target = self.plan.commands.get(message.topic or "")
            if target is not None and message.payload:
                self._command(target, message.payload)

    def _command(self, target: CommandTarget, payload: bytes) -> None:
        actuator = target.actuator.id
        try:
            body = translate(target, payload)
        except CommandRefusedError as exc:
            self.refused[actuator] += 1
            _log.warning("home assistant command refused", actuator=actuator, error=str(exc))
            return
        sent = self.runtime.pipeline.operator_command(Command(actuator, body, "homeassistant", time.time()))
        self.commands[actuator] += 1
        _log.info("home assistant command", actuator=actuator, payload=body, sent=sent)

    # ------------------------------------------------------------------ publishing
    def _publish(self, topic: str, body: bytes, *, retain: bool) -> bool:
        info = self.link.client.publish(topic, body, qos=1, retain=retain)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            return False  # paho's queue is full: the next tick tries again
        self.link.after_io()
        return True

    def _put(self, topic: str, body: bytes, *, retain: bool) -> None:
        if self._sent.get(topic) != body and self._publish(topic, body, retain=retain):
            self._sent[topic] = body

    def _values(self) -> dict[str, dict[str, Any]]:
        values: dict[str, dict[str, Any]] = {}
        for sensor, (value, _ts) in list(self.runtime.state.last_values.items()):
            device, _, metric = sensor.partition("/")
            values.setdefault(device, {})[metric] = value
        return values

    def _replan(self, values: dict[str, dict[str, Any]] | None = None) -> bool:
        rt = self.runtime
        key = (id(rt.config), id(rt.engine), len(rt.state.last_values))
        if key == self._plan_key:
            return False
        self._plan_key = key
        seen = self._values() if values is None else values
        self.plan = plan(rt.config, gateway_id=rt.gateway_id, version=__version__, topics=self.topics,
                         rules=rule_infos(rt.engine), seen=seen)  # fmt: skip
        return True

    def refresh(self, *, force: bool = False) -> None:
        """Publish what changed since the last call (everything with ``force``)."""
        values = self._values()
        if self._replan(values) or force:
            self._announce()
        self._states(values)

    def _announce(self) -> None:
        published = {topic: dict(components) for topic, components in self.published.configs.items()}
        for topic, payload in self.plan.configs.items():
            components: dict[str, Any] = payload["components"]
            gone = {cid: p for cid, p in published.get(topic, {}).items() if cid not in components}
            body = dict(payload)
            if gone:  # HA removes one entity of a device when its component is just its platform
                body["components"] = {**components, **{cid: {"platform": p} for cid, p in gone.items()}}
            self._put(topic, json.dumps(body, sort_keys=True).encode(), retain=True)
            published[topic] = {cid: c["platform"] for cid, c in components.items()}
        for topic in [t for t in published if t not in self.plan.configs]:
            _log.info("removing from home assistant", topic=topic)
            if self._publish(topic, b"", retain=True):
                del published[topic]
                self._sent.pop(topic, None)
        if published != self.published.configs:
            self.published.configs = published
            loop = asyncio.get_running_loop()
            self._saving = loop.run_in_executor(None, self.published.save, published)
            self._saving.add_done_callback(self._saved)

    def _saved(self, future: asyncio.Future[None]) -> None:
        error = None if future.cancelled() else future.exception()
        if error is not None:
            _log.error("cannot keep what was announced to home assistant: removals may be missed after a "
                       "restart", path=str(self.published.path), error=str(error))  # fmt: skip

    def _states(self, values: dict[str, dict[str, Any]]) -> None:
        rt, topics, mono = self.runtime, self.topics, time.monotonic()
        for device, metrics in self.plan.devices.items():
            try:
                online = str(rt.health.state(device, mono)) == "online"
            except KeyError:  # a reload is replacing the device components
                continue
            self._put(topics.device_availability(device), b"online" if online else b"offline", retain=True)
            have = values.get(device, {})
            doc = {metric: have.get(metric) for metric in metrics}
            self._put(topics.device_state(device), json.dumps(doc, sort_keys=True).encode(), retain=False)
        for actuator, act in self.plan.actuators.items():
            command = rt.state.last_commands.get(actuator)
            if command is not None and command is not self._commands_seen.get(actuator):
                self._commands_seen[actuator] = command
                self._merged.setdefault(actuator, {}).update(command.payload)
            doc = actuator_state(act, self._merged.get(actuator, {}))
            body = json.dumps(doc, sort_keys=True).encode()
            self._put(topics.actuator_state(actuator), body, retain=False)
        engine = rt.engine
        for rule_id in self.plan.rules:
            with contextlib.suppress(KeyError):
                fired = engine.rule(rule_id).fired
                self._put(topics.rule_state(rule_id), b"ON" if fired else b"OFF", retain=False)


def build_link(runtime: Runtime, *, environ: dict[str, str]) -> HomeAssistantLink:
    """The link for the runtime's config: its MQTT connection, password resolved."""
    from gateway.assembly import mqtt_connection  # noqa: PLC0415
    from gateway.secrets import resolve_secret  # noqa: PLC0415

    ref = runtime.config.mqtt.password
    password = resolve_secret(ref, environ=environ, what="mqtt password") if ref else None
    return HomeAssistantLink(runtime, mqtt_connection(runtime.config, runtime.gateway_id), password=password)
