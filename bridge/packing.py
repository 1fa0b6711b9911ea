"""The spool's group blob: the records of one lane in one commit, packed in one SQLite value.

Pure (no SQLite, no clock). A group is stored as one row of the ``groups`` table
(schema 4, :mod:`bridge.migrations`) keyed by ``(prio, first_seq)``; its ``blob`` is::

    header  <BBII: format (1), flags (bit 0: body is zlib), records n, distinct keys k
    body    u32[n]  sequence - first_seq        (ascending; gaps once a record is taken out)
            u8[n]   kind
            f64[n]  ts
            u16[n]  key index (into the k keys)
            u32[n]  data length
            u16[k]  key length (UTF-8 bytes)
            the k keys (UTF-8), then the n data, back to back

Arrays are little-endian. Columns instead of per-record headers keep packing and
unpacking in C loops (``array``, ``bytes.join``), and a key repeated in the group (a
device's readings) is stored once. The body is compressed with zlib (level 1, ~2.5M
readings/s on this machine) when that makes it smaller: what the SD card is spared.
"""

from __future__ import annotations

import struct
import sys
import zlib
from array import array
from collections.abc import Sequence
from itertools import accumulate, pairwise
from typing import Any

import orjson

from bridge.policy import ROW_OVERHEAD

__all__ = ["COMPRESS", "MAX_GROUP", "Packed", "pack", "pack_side", "record_sizes", "unpack", "unpack_side"]

FORMAT = 1
_ZLIB = 1
_HEAD = struct.Struct("<BBII")
_SWAP = sys.byteorder != "little"
MAX_GROUP = 8192
"""Records per group at most (the writer splits a lane's rows of one commit above it)."""
COMPRESS = True
"""zlib the body when it shrinks (benchmarks switch it off to show the layout alone)."""

Packed = tuple[int, int, int, int, bytes]
"""``(first_seq, last_seq, records, size, blob)``: ``size`` as the overflow policy counts it."""


def _arr(code: str, values: Any) -> bytes:
    a = array(code, values)
    if _SWAP:  # pragma: no cover - big-endian hosts
        a.byteswap()
    return a.tobytes()


def _load(code: str, raw: bytes | memoryview) -> array[Any]:
    a = array(code)
    a.frombytes(raw)
    if _SWAP:  # pragma: no cover - big-endian hosts
        a.byteswap()
    return a


def pack(seqs: Sequence[int], kinds: Sequence[int], keys: Sequence[str], ts: Sequence[float],
         datas: Sequence[bytes]) -> Packed:  # fmt: skip
    """One group from columns in sequence order (at most :data:`MAX_GROUP` records, kinds < 256)."""
    first = seqs[0]
    index: dict[str, int] = {}
    setdefault = index.setdefault
    key_index = [setdefault(k, len(index)) for k in keys]
    key_bytes = [k.encode() for k in index]
    body = b"".join([
        _arr("I", [s - first for s in seqs]),
        bytes(kinds),
        _arr("d", ts),
        _arr("H", key_index),
        _arr("I", map(len, datas)),
        _arr("H", map(len, key_bytes)),
        *key_bytes,
        *datas,
    ])  # fmt: skip
    flags = 0
    if COMPRESS:
        packed = zlib.compress(body, 1)
        if len(packed) < len(body):
            body, flags = packed, _ZLIB
    size = sum(map(len, datas)) + sum(map(len, keys)) + len(seqs) * ROW_OVERHEAD
    return first, seqs[-1], len(seqs), size, _HEAD.pack(FORMAT, flags, len(seqs), len(index)) + body


def _body(blob: bytes) -> tuple[int, int, bytes]:
    fmt, flags, n, k = _HEAD.unpack_from(blob)
    if fmt != FORMAT:
        raise ValueError(f"spool group format {fmt} unknown to this edgegw")
    body = blob[_HEAD.size :]
    if flags & _ZLIB:
        try:
            body = zlib.decompress(body)
        except zlib.error as exc:
            raise ValueError(f"spool group body: {exc}") from exc
    return n, k, body


def unpack(first: int, blob: bytes) -> list[tuple[int, int, str, float, bytes]]:
    """``(seq, kind, key, ts, data)`` of every record, in sequence order."""
    n, k, body = _body(blob)
    view = memoryview(body)
    at = 0
    offsets = _load("I", view[at : at + 4 * n])
    at += 4 * n
    kinds = body[at : at + n]
    at += n
    ts = _load("d", view[at : at + 8 * n])
    at += 8 * n
    key_index = _load("H", view[at : at + 2 * n])
    at += 2 * n
    data_len = _load("I", view[at : at + 4 * n])
    at += 4 * n
    key_len = _load("H", view[at : at + 2 * k])
    at += 2 * k
    ends = list(accumulate(key_len, initial=at))
    names = [body[a:b].decode() for a, b in pairwise(ends)]
    ends = list(accumulate(data_len, initial=ends[-1]))
    datas = [body[a:b] for a, b in pairwise(ends)]
    seqs = [first + o for o in offsets]
    return list(zip(seqs, kinds, [names[i] for i in key_index], ts, datas, strict=True))


def record_sizes(first: int, blob: bytes) -> list[tuple[int, int]]:
    """``(seq, size)`` of every record, size as the overflow policy counts it (data and key
    length plus :data:`~bridge.policy.ROW_OVERHEAD`); reads the columns, not the data."""
    n, k, body = _body(blob)
    view = memoryview(body)
    offsets = _load("I", view[: 4 * n])
    at = 13 * n
    key_index = _load("H", view[at : at + 2 * n])
    data_len = _load("I", view[at + 2 * n : at + 6 * n])
    key_len = _load("H", view[at + 6 * n : at + 6 * n + 2 * k])
    ends = list(accumulate(key_len, initial=at + 6 * n + 2 * k))
    chars = [len(body[a:b].decode()) + ROW_OVERHEAD for a, b in pairwise(ends)]
    return [(first + o, d + chars[i]) for o, d, i in zip(offsets, data_len, key_index, strict=True)]


# ---------------------------------------------------------------------- side rows
_SIDE_HEAD = struct.Struct("<BBdI")
_LEN = struct.Struct("<I")
_IDS_ZLIB = 2
SIDE_FORMAT = 129
"""Not a group's format (1): either unpacker refuses the other's blob."""


def pack_side(at: float, origins: Sequence[tuple[int, int]], state: dict[str, Any] | None) -> bytes:
    """A side row (see :mod:`bridge.store`)::

        header  <BBdI: format (129), flags, at, origins n
        body    u32[n] MQTT packet id, i64[n] digest, then the JSON of ``state`` (or nothing)

    Flags: bit 0, the JSON is zlib; bit 1, the packet ids are stored as differences from the
    one before (the first from 0, modulo 2**32), zlib, preceded by their compressed length
    (u32). A commit's packet ids are mostly consecutive and pack to a few bytes (they were a
    sixth of a side row at home rates); the digests do not shrink and stay as they are.

    ``state`` is ``{"s": {key: value}, "d": {key: changed top-level fields}, "l": {key:
    {field: [dropped, added]}}}`` (see :meth:`bridge.store.Store.log_side`)."""
    text = orjson.dumps(state) if state else b""
    flags = 0
    if text:
        packed = zlib.compress(text, 1)
        if len(packed) < len(text):
            text, flags = packed, _ZLIB
    slots = [o[0] for o in origins]
    ids = _arr("I", slots)
    if ids:
        packed = zlib.compress(_arr("I", [(b - a) % 2**32 for a, b in pairwise([0, *slots])]), 1)
        if len(packed) + _LEN.size < len(ids):
            ids, flags = _LEN.pack(len(packed)) + packed, flags | _IDS_ZLIB
    digests = _arr("q", [o[1] for o in origins])
    return _SIDE_HEAD.pack(SIDE_FORMAT, flags, at, len(origins)) + ids + digests + text


def unpack_side(blob: bytes) -> tuple[float, list[tuple[int, int]], dict[str, Any]]:
    """``(at, [(packet id, digest)], state)`` of a side row; ValueError if it is not one."""
    fmt, flags, at, n = _SIDE_HEAD.unpack_from(blob)
    if fmt != SIDE_FORMAT:
        raise ValueError(f"spool side row format {fmt} unknown to this edgegw")
    start = _SIDE_HEAD.size
    if flags & _IDS_ZLIB:
        (size,) = _LEN.unpack_from(blob, start)
        start += _LEN.size
        try:
            steps = _load("I", zlib.decompress(blob[start : start + size]))
        except (zlib.error, ValueError) as exc:
            raise ValueError(f"spool side row: packet ids: {exc}") from exc
        slots = [s % 2**32 for s in accumulate(steps)]
        start += size
    else:
        slots = list(_load("I", blob[start : start + 4 * n]))
        start += 4 * n
    raw = blob[start : start + 8 * n]
    if len(slots) != n or len(raw) != 8 * n:
        raise ValueError(f"spool side row: {len(slots)} packet ids and {len(raw)} bytes of digests for {n}")
    digests = _load("q", raw)
    start += 8 * n
    text = blob[start:]
    state: dict[str, Any] = {}
    if text:
        try:
            state = orjson.loads(zlib.decompress(text) if flags & _ZLIB else text)
        except (zlib.error, orjson.JSONDecodeError) as exc:
            raise ValueError(f"spool side row: {exc}") from exc
    return at, list(zip(slots, digests, strict=True)), state
