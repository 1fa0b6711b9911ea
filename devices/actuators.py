"""Actuators: commands out to declared devices, with optional read-back confirmation.

:class:`Actuators` holds the declared actuators (only these can be commanded), encodes a
:class:`~gateway.model.Command` per profile and hands the bytes to a :class:`Publisher`
(MQTT) or a :class:`LineWriter` (serial). Profiles:

- ``zigbee2mqtt``: ``<base>/<name>/set`` with the payload as JSON;
- ``tasmota``: one ``cmnd/<topic>/<Command>`` message per key: ``state``/``power`` go to
  ``POWER`` (``true``/``false`` become ``ON``/``OFF``), other keys (``Dimmer``,
  ``CT``...) to their own command;
- ``json``: the payload as JSON on ``topic``;
- ``line`` (serial): ``key=value,key=value`` and a newline; ``json`` (serial): a JSON line.

Read-back (``confirm:``): the command is confirmed when the device's state topic shows
every scalar of the command (``<base>/<name>`` for Zigbee2MQTT, ``stat/<topic>/RESULT``
for Tasmota, ``confirm.state_topic`` otherwise) within ``confirm.timeout``. ``check(now)``
returns, counts and logs the ones that timed out. Time is passed in (monotonic seconds).

A publisher that can hold commands while its connection is down (the MQTT link) registers
``submit``: it gets each command's messages together as an :class:`Outgoing` and either
sends them now or holds them. A held command is neither sent nor failed yet; when it
leaves later the publisher calls :meth:`Actuators.sent_late`, which counts it as sent and
starts its read-back from then. What the publisher drops instead it counts itself.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from devices.config import ActuatorConfig
from gateway.errors import ActuatorError
from gateway.model import Command

__all__ = [
    "Actuators",
    "LineWriter",
    "Outgoing",
    "Pending",
    "Publisher",
    "command_problem",
    "encode_command",
    "state_topic",
]

_log = structlog.get_logger("edgegw.devices.actuators")


class Publisher(Protocol):
    def publish(self, topic: str, payload: bytes, qos: int) -> None:
        """Queue one message; raises :class:`ActuatorError` when it cannot."""


class LineWriter(Protocol):
    def write_line(self, line: bytes) -> None:
        """Write one line (with its newline); raises :class:`ActuatorError`."""


@dataclass(slots=True)
class Outgoing:
    """One command's MQTT messages, handed to a holding publisher's ``submit`` together."""

    actuator: str
    messages: list[tuple[str, bytes]]
    qos: int
    command: Command


@dataclass(slots=True)
class Pending:
    """A command waiting for its read-back."""

    actuator: str
    expected: dict[str, Any]
    sent_at: float
    deadline: float
    command: Command


_TASMOTA_COMMAND = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,31}")
"""A key becomes the last topic level (``cmnd/<topic>/<key>``): no ``/``, ``+``, ``#`` or
spaces (``Backlog ...``), so a payload can only name one command."""


def _tasmota_key(key: str) -> str:
    return "POWER" if key.lower() in ("state", "power") else key


def _tasmota_value(value: object) -> str:
    if isinstance(value, bool):
        return "ON" if value else "OFF"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _plain_text(cfg: ActuatorConfig, value: object) -> str:
    if isinstance(value, bool):
        return cfg.payload_on if value else cfg.payload_off
    return _tasmota_value(value)


def _plain_value(cfg: ActuatorConfig, payload: Mapping[str, Any]) -> object:
    """The one value of a command to a ``plain`` actuator (``{state: ON}``, ``{value: 21}``)."""
    if len(payload) != 1:
        raise ActuatorError(
            f"{cfg.id}: a plain actuator takes one value (e.g. {{state: ON}}), got {dict(payload)!r}"
        )
    (value,) = payload.values()
    text_ok = not isinstance(value, str) or value.isprintable()
    if not isinstance(value, str | int | float | bool) or not text_ok:
        raise ActuatorError(
            f"{cfg.id}: a plain actuator takes a number, a boolean or a line of text, got {value!r}"
        )
    return value


def encode_command(cfg: ActuatorConfig, payload: Mapping[str, Any]) -> list[tuple[str, bytes]]:
    """The messages (topic, payload) for one command; for serial the topic is ``""``."""
    try:
        if cfg.transport == "serial":
            if cfg.profile == "line":
                parts = [f"{k}={_tasmota_value(v) if isinstance(v, bool) else v}" for k, v in payload.items()]
                line = ",".join(parts)
            else:
                line = json.dumps(dict(payload), separators=(",", ":"), allow_nan=False)
            if "\n" in line or "\r" in line:
                raise ActuatorError(f"{cfg.id}: a line command cannot hold a newline")
            return [("", line.encode() + b"\n")]
        if cfg.profile == "tasmota":
            if bad := [k for k in payload if not _TASMOTA_COMMAND.fullmatch(str(k))]:
                raise ActuatorError(f"{cfg.id}: {bad[0]!r} is not a Tasmota command (letters, digits, _)")
            return [
                (f"cmnd/{cfg.name}/{_tasmota_key(k)}", _tasmota_value(v).encode())
                for k, v in payload.items()
            ]
        if cfg.profile == "plain":
            assert cfg.topic is not None  # the config model checks it
            return [(cfg.topic, _plain_text(cfg, _plain_value(cfg, payload)).encode())]
        body = json.dumps(dict(payload), separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise ActuatorError(f"{cfg.id}: cannot encode command {dict(payload)!r}: {exc}") from exc
    if cfg.profile == "zigbee2mqtt":
        return [(f"{cfg.base_topic}/{cfg.name}/set", body)]
    assert cfg.topic is not None  # the config model checks it
    return [(cfg.topic, body)]


def command_problem(configs: Iterable[ActuatorConfig]) -> Callable[[str, Mapping[str, Any]], str | None]:
    """For config checks: ``(actuator id, payload) ->`` why that actuator cannot send the
    payload (what :func:`encode_command` would raise), or None (also for undeclared ids)."""
    by_id = {cfg.id: cfg for cfg in configs}

    def check(actuator: str, payload: Mapping[str, Any]) -> str | None:
        cfg = by_id.get(actuator)
        if cfg is None:
            return None
        try:
            encode_command(cfg, payload)
        except ActuatorError as exc:
            return str(exc).removeprefix(f"{cfg.id}: ")
        return None

    return check


def state_topic(cfg: ActuatorConfig) -> str | None:
    """Where the device reports its state, for read-back."""
    if cfg.confirm is None or cfg.transport != "mqtt":
        return None
    if cfg.confirm.state_topic:
        return cfg.confirm.state_topic
    if cfg.profile == "zigbee2mqtt":
        return f"{cfg.base_topic}/{cfg.name}"
    if cfg.profile == "tasmota":
        return f"stat/{cfg.name}/RESULT"
    return None


_PLAIN_STATE = "value"
"""The key a plain actuator's read-back compares: its state topic's whole payload."""


def _expected(cfg: ActuatorConfig, payload: Mapping[str, Any]) -> dict[str, Any]:
    if cfg.profile == "plain":
        return {_PLAIN_STATE: _plain_text(cfg, _plain_value(cfg, payload))}
    out: dict[str, Any] = {}
    for key, value in payload.items():
        if isinstance(value, dict | list):
            continue
        if cfg.profile == "tasmota":
            out[_tasmota_key(key)] = _tasmota_value(value) if isinstance(value, bool) else value
        else:
            out[key] = value
    return out


def _state(cfg: ActuatorConfig, payload: bytes) -> Mapping[str, Any] | None:
    """A state message as a mapping: JSON objects as they are; a plain actuator's text whole."""
    if cfg.profile == "plain":
        try:
            text = payload.decode().strip()
        except UnicodeDecodeError:
            return None
        try:
            number = float(text)
        except ValueError:
            return {_PLAIN_STATE: text}
        return {_PLAIN_STATE: number if math.isfinite(number) else text}
    try:
        state = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    return state if isinstance(state, dict) else None


def _same(want: object, got: object) -> bool:
    if isinstance(want, str) and isinstance(got, int | float) and not isinstance(got, bool):
        try:
            want = float(want)  # a plain actuator sent "21", its state reads 21.0
        except ValueError:
            return False
    if isinstance(want, str) and isinstance(got, str):
        return want.lower() == got.lower()
    if isinstance(want, bool) or isinstance(got, bool):
        return want == got
    if isinstance(want, int | float) and isinstance(got, int | float):
        return math.isclose(want, got, rel_tol=1e-9, abs_tol=1e-9)
    return want == got


def matches(expected: Mapping[str, Any], state: Mapping[str, Any]) -> bool:
    """True when every expected key shows up in ``state`` (keys case-insensitive)."""
    lowered = {str(k).lower(): v for k, v in state.items()}
    return all(k.lower() in lowered and _same(v, lowered[k.lower()]) for k, v in expected.items())


class Actuators:
    """The declared actuators. ``apply(command, now)``; ``on_state``/``check`` for read-back."""

    def __init__(
        self,
        configs: Sequence[ActuatorConfig],
        *,
        publisher: Publisher | None = None,
        writers: Mapping[str, LineWriter] | None = None,
    ) -> None:
        self.configs = {cfg.id: cfg for cfg in configs}
        if len(self.configs) != len(configs):
            raise ValueError("duplicate actuator id")
        self._publisher = publisher
        self._submit: Callable[[Outgoing], bool] | None = None
        self._writers = dict(writers or {})
        self._by_state_topic: dict[str, list[ActuatorConfig]] = {}
        for cfg in configs:
            topic = state_topic(cfg)
            if topic is not None:
                self._by_state_topic.setdefault(topic, []).append(cfg)
        self.pending: dict[str, Pending] = {}
        self.sent: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        self.confirmed: Counter[str] = Counter()
        self.unconfirmed: Counter[str] = Counter()
        self.outcome: dict[str, str] = {}
        """What became of each actuator's last command: ``sent`` (no read-back), ``waiting``
        (for its read-back), ``confirmed``, ``unconfirmed``, ``held`` or ``failed``."""

    @property
    def state_topics(self) -> list[str]:
        return sorted(self._by_state_topic)

    def set_publisher(
        self, publisher: Publisher, *, submit: Callable[[Outgoing], bool] | None = None
    ) -> None:
        """``submit(outgoing)``, when given, takes whole commands instead of ``publish``: True
        when sent now, False when held (see :meth:`sent_late`); raises :class:`ActuatorError`."""
        self._publisher = publisher
        self._submit = submit

    def apply(self, command: Command, now: float) -> None:
        """Send ``command``; raises :class:`ActuatorError` (undeclared, encoding, delivery)."""
        cfg = self.configs.get(command.actuator)
        if cfg is None:
            raise ActuatorError(f"actuator {command.actuator!r} is not declared in the config")
        try:
            messages = encode_command(cfg, command.payload)
            if cfg.transport == "serial":
                writer = self._writers.get(cfg.id)
                if writer is None:
                    raise ActuatorError(f"{cfg.id}: serial port not open")
                for _, line in messages:
                    writer.write_line(line)
            else:
                if self._publisher is None:
                    raise ActuatorError(f"{cfg.id}: no MQTT connection")
                if self._submit is not None:
                    if not self._submit(Outgoing(cfg.id, messages, cfg.qos, command)):
                        self.outcome[cfg.id] = "held"
                        return  # held: the publisher reports it through sent_late, or drops it
                else:
                    for topic, body in messages:
                        self._publisher.publish(topic, body, cfg.qos)
        except ActuatorError as exc:
            self.failed[cfg.id] += 1
            self.outcome[cfg.id] = "failed"
            _log.warning("command failed", actuator=cfg.id, error=str(exc), rule=command.rule_id)
            raise
        self._sent(cfg, command, now)

    def sent_late(self, outgoing: Outgoing, now: float) -> None:
        """A command the publisher held has left now: count it as sent, start its read-back."""
        self._sent(self.configs[outgoing.actuator], outgoing.command, now)

    def _sent(self, cfg: ActuatorConfig, command: Command, now: float) -> None:
        self.sent[cfg.id] += 1
        self.outcome[cfg.id] = "sent"
        _log.debug("command sent", actuator=cfg.id, rule=command.rule_id, payload=dict(command.payload))
        if cfg.confirm is not None and state_topic(cfg) is not None:
            expected = _expected(cfg, command.payload)
            if expected:
                # a newer command replaces the one still waiting
                self.pending[cfg.id] = Pending(cfg.id, expected, now, now + cfg.confirm.timeout, command)
                self.outcome[cfg.id] = "waiting"

    def on_state(self, topic: str, payload: bytes, now: float) -> list[str]:
        """A state message arrived; returns the actuators it confirmed."""
        configs = self._by_state_topic.get(topic)
        if not configs:
            return []
        done: list[str] = []
        for cfg in configs:
            pending = self.pending.get(cfg.id)
            if pending is None or now > pending.deadline:
                continue
            state = _state(cfg, payload)
            if state is not None and matches(pending.expected, state):
                del self.pending[cfg.id]
                self.confirmed[cfg.id] += 1
                self.outcome[cfg.id] = "confirmed"
                done.append(cfg.id)
        return done

    def check(self, now: float) -> list[Pending]:
        """Commands whose read-back did not come in time (counted and logged once each)."""
        late = [p for p in self.pending.values() if now > p.deadline]
        for pending in late:
            del self.pending[pending.actuator]
            self.unconfirmed[pending.actuator] += 1
            self.outcome[pending.actuator] = "unconfirmed"
            _log.warning(
                "command not confirmed",
                actuator=pending.actuator,
                expected=pending.expected,
                waited=round(now - pending.sent_at, 3),
                unconfirmed_total=self.unconfirmed[pending.actuator],
            )
        return late
