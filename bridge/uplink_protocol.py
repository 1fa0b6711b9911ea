"""The messages between ``edgegw run`` and its uplink process (pure: no I/O).

One frame = a 4-byte big-endian length, then a UTF-8 JSON object with a ``"t"`` (type)
key. The parent (``edgegw run``, :mod:`bridge.uplink`) sends :class:`Start` first, then
:class:`Ready` (rows were committed), :class:`Status` (spool figures and heartbeat fields,
about once a second), :class:`Busy` (the local path runs late: backlog rounds pause),
:class:`Reply` (to a request that waits) and :class:`Stop`. The child
(:mod:`bridge.uplink_process`) sends :class:`Stats` (its forwarder's figures),
:class:`Settle` and :class:`Rebase`: the spool's writes, applied by the parent's writer
thread, so only one process ever writes the SQLite file.

:class:`Start` carries the resolved Kafka secrets: it travels on the private socket pair
only, and its ``repr`` hides them.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

__all__ = [
    "MAX_FRAME",
    "Busy",
    "FrameDecoder",
    "Message",
    "ProtocolError",
    "Ready",
    "Rebase",
    "Reply",
    "Settle",
    "Start",
    "Stats",
    "Status",
    "Stop",
    "decode",
    "encode",
]

MAX_FRAME = 16 * 1024 * 1024
"""A frame longer than this is a broken peer, not a message."""
_HEADER = struct.Struct("!I")


class ProtocolError(ValueError):
    """A frame that is not a message of this protocol."""


def _int_keys(value: Any, what: str) -> dict[int, int]:
    if not isinstance(value, Mapping):
        raise ProtocolError(f"{what}: expected an object")
    try:
        return {int(k): int(v) for k, v in value.items()}
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"{what}: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Start:
    """Parent -> child, first: what the uplink needs (secrets resolved, never in argv/env)."""

    TYPE: ClassVar[str] = "start"
    kafka: dict[str, Any]
    """``KafkaConfig.model_dump(mode="json")``."""
    gateway_id: str
    spool_path: str
    spool_id: str
    lanes: dict[int, int]
    """Drain lane of each kind (``Spool.lanes``)."""
    sasl_password: str | None = field(default=None, repr=False)
    ssl_key_password: str | None = field(default=None, repr=False)
    log_level: str = "info"
    log_json: bool | None = None
    durable_seq: int | None = None
    """Rows below this sequence are on disk: the child ships none above (``Spool.durable_seq``)."""


@dataclass(frozen=True, slots=True)
class Ready:
    """Parent -> child: a commit added rows; rows below ``durable_seq`` are on disk now."""

    TYPE: ClassVar[str] = "ready"
    durable_seq: int | None = None


@dataclass(frozen=True, slots=True)
class Busy:
    """Parent -> child: the event loop runs late (True) or caught up (False)."""

    TYPE: ClassVar[str] = "busy"
    busy: bool


@dataclass(frozen=True, slots=True)
class Status:
    """Parent -> child, about once a second: the spool writer's figures and the heartbeat's
    fields from the runtime (bad input, deployment)."""

    TYPE: ClassVar[str] = "status"
    depth: int
    bytes: int
    oldest_age: float | None
    dead_letters: int
    dropped: dict[str, int]
    stored_lanes: list[int]
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Stop:
    """Parent -> child: ship what is committed for at most ``budget`` seconds, then exit."""

    TYPE: ClassVar[str] = "stop"
    budget: float


@dataclass(frozen=True, slots=True)
class Reply:
    """Parent -> child: request ``id`` was applied (``error`` None) or failed."""

    TYPE: ClassVar[str] = "reply"
    id: int
    value: int = 0
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Stats:
    """Child -> parent: the forwarder's figures (``ForwarderStats`` fields)."""

    TYPE: ClassVar[str] = "stats"
    forwarder: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Settle:
    """Child -> parent: ``Spool.settle``. ``id`` > 0: the child waits for a :class:`Reply`."""

    TYPE: ClassVar[str] = "settle"
    id: int
    upto: dict[int, int]
    dead: list[tuple[int, int, str, str]] = field(default_factory=list)
    """(seq, lane, reason, error) of rows moved to the dead letters."""


@dataclass(frozen=True, slots=True)
class Rebase:
    """Child -> parent: ``Spool.rebase(floor)``; the :class:`Reply` carries the rows moved."""

    TYPE: ClassVar[str] = "rebase"
    id: int
    floor: int


Message = Start | Ready | Busy | Status | Stop | Reply | Stats | Settle | Rebase
_TYPES: dict[str, type[Any]] = {
    cls.TYPE: cls for cls in (Start, Ready, Busy, Status, Stop, Reply, Stats, Settle, Rebase)
}


def _wire(msg: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"t": msg.TYPE}
    for f in fields(msg):
        out[f.name] = getattr(msg, f.name)
    return out


def encode(msg: Message) -> bytes:
    """One frame: length prefix and JSON body."""
    body = json.dumps(_wire(msg), separators=(",", ":"), default=str).encode()
    if len(body) > MAX_FRAME:
        raise ProtocolError(f"message too large: {len(body)} bytes")
    return _HEADER.pack(len(body)) + body


def decode(body: bytes) -> Message:
    """The message of one frame's body; :class:`ProtocolError` if it is not one."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ProtocolError("expected an object")
    kind = data.pop("t", None)
    cls = _TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ProtocolError(f"unknown message type {kind!r}")
    names = {f.name for f in fields(cls)}
    if set(data) - names:
        raise ProtocolError(f"{kind}: unknown fields {sorted(set(data) - names)}")
    if cls is Start:
        data["lanes"] = _int_keys(data.get("lanes", {}), "start.lanes")
    elif cls is Settle:
        data["upto"] = _int_keys(data.get("upto", {}), "settle.upto")
        try:
            data["dead"] = [(int(s), int(lane), str(r), str(e)) for s, lane, r, e in data.get("dead", [])]
        except (TypeError, ValueError) as exc:
            raise ProtocolError(f"settle.dead: {exc}") from exc
    elif cls is Stats:
        fw = data.get("forwarder")
        if not isinstance(fw, dict):
            raise ProtocolError("stats.forwarder: expected an object")
        fw["cursors"] = _int_keys(fw.get("cursors", {}), "stats.forwarder.cursors")
    try:
        msg: Message = cls(**data)
    except TypeError as exc:  # a missing field
        raise ProtocolError(f"{kind}: {exc}") from exc
    return msg


class FrameDecoder:
    """Cuts a byte stream into messages: :meth:`feed` what was read, get the whole frames."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Message]:
        self._buffer += data
        out: list[Message] = []
        while len(self._buffer) >= _HEADER.size:
            (size,) = _HEADER.unpack_from(self._buffer)
            if size > MAX_FRAME:
                raise ProtocolError(f"frame too large: {size} bytes")
            end = _HEADER.size + size
            if len(self._buffer) < end:
                break
            body = bytes(self._buffer[_HEADER.size : end])
            del self._buffer[:end]
            out.append(decode(body))
        return out

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held."""
        return len(self._buffer)
