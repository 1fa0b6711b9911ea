"""Compiled conditions: plain slotted objects that the engine updates per reading.

A leaf watches one sensor. ``update(value, mono)`` returns ``UNCHANGED``, ``CHANGED``
(its ``met`` flipped) or ``BAD`` (the value cannot be compared: counted, skipped). A
leaf with hysteresis is a Schmitt trigger: it enters at the threshold and leaves only
``h`` back across it. ``All``/``Any`` nodes combine leaves; an unknown leaf (no data
yet) counts as not met. No pydantic here: this is the per-reading hot path.
"""

from __future__ import annotations

import math
from collections import deque
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.model import Value

__all__ = [
    "BAD",
    "CHANGED",
    "UNCHANGED",
    "AboveLeaf",
    "AllNode",
    "AnyNode",
    "BelowLeaf",
    "EqualsLeaf",
    "Leaf",
    "Node",
    "RangeLeaf",
    "StaleLeaf",
    "WindowLeaf",
]

UNCHANGED = 0
CHANGED = 1
BAD = 2

# What a leaf is for, in the rule that owns it.
ROLE_WHEN = 0
ROLE_UNLESS = 1
ROLE_FAILSAFE = 2


class Leaf:
    """Base of all leaves: one sensor, a ``met`` flag and the value that decided it."""

    __slots__ = ("known", "label", "met", "role", "rule", "sensor", "value")

    keeps_samples = False
    """Whether every reading changes what a restart needs (a window's samples), not only
    ``value``: a threshold leaf's ``met`` and ``known`` decide, its value is shown."""

    def __init__(self, sensor: str, label: str) -> None:
        self.sensor = sensor
        self.label = label
        self.met = False
        self.known = False
        self.value: Value | None = None
        self.role = ROLE_WHEN
        self.rule: object = None  # the engine's compiled rule, set by the compiler

    def update(self, value: Value, mono: float) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def truth(self) -> bool:
        return self.met

    def reset(self) -> None:
        self.met = False
        self.known = False
        self.value = None

    def leaves(self) -> list[Leaf]:
        return [self]


class AboveLeaf(Leaf):
    """``value > t``; with hysteresis stays met while ``value > t - h``."""

    __slots__ = ("enter", "stay")

    def __init__(self, sensor: str, label: str, threshold: float, hysteresis: float) -> None:
        super().__init__(sensor, label)
        self.enter = threshold
        self.stay = threshold - hysteresis

    def update(self, value: Value, mono: float) -> int:
        cls = value.__class__
        if cls is not float and cls is not int:
            return BAD
        self.value = value
        self.known = True
        met = value > (self.stay if self.met else self.enter)  # type: ignore[operator]
        if met is self.met:
            return UNCHANGED
        self.met = met
        return CHANGED


class BelowLeaf(Leaf):
    """``value < t``; with hysteresis stays met while ``value < t + h``."""

    __slots__ = ("enter", "stay")

    def __init__(self, sensor: str, label: str, threshold: float, hysteresis: float) -> None:
        super().__init__(sensor, label)
        self.enter = threshold
        self.stay = threshold + hysteresis

    def update(self, value: Value, mono: float) -> int:
        cls = value.__class__
        if cls is not float and cls is not int:
            return BAD
        self.value = value
        self.known = True
        met = value < (self.stay if self.met else self.enter)  # type: ignore[operator]
        if met is self.met:
            return UNCHANGED
        self.met = met
        return CHANGED


class RangeLeaf(Leaf):
    """``between`` (inclusive) or ``above`` + ``below`` (strict), with hysteresis."""

    __slots__ = ("h", "hi", "lo", "strict")

    def __init__(
        self, sensor: str, label: str, lo: float, hi: float, hysteresis: float, *, strict: bool
    ) -> None:
        super().__init__(sensor, label)
        self.lo = lo
        self.hi = hi
        self.h = hysteresis
        self.strict = strict

    def update(self, value: Value, mono: float) -> int:
        cls = value.__class__
        if cls is not float and cls is not int:
            return BAD
        self.value = value
        self.known = True
        h = self.h if self.met else 0.0
        lo, hi = self.lo - h, self.hi + h
        v: float = value  # type: ignore[assignment]
        met = lo < v < hi if self.strict else lo <= v <= hi
        if met is self.met:
            return UNCHANGED
        self.met = met
        return CHANGED


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return "str"


class EqualsLeaf(Leaf):
    """``value == target``, same kind only (number, boolean, string); another kind is BAD."""

    __slots__ = ("kind", "target")

    def __init__(self, sensor: str, label: str, target: Value) -> None:
        super().__init__(sensor, label)
        self.target = target
        self.kind = _kind(target)

    def update(self, value: Value, mono: float) -> int:
        if _kind(value) != self.kind:
            return BAD
        self.value = value
        self.known = True
        met = value == self.target
        if met is self.met:
            return UNCHANGED
        self.met = met
        return CHANGED


class WindowLeaf(Leaf):
    """A threshold on ``avg``/``min``/``max`` or ``rate`` (per minute) over a sliding window.

    The window holds the readings of the last ``window`` seconds (monotonic); it is
    evaluated when a reading arrives. A rate needs two readings at different times.
    """

    __slots__ = ("func", "inner", "items", "total", "window")

    keeps_samples = True

    def __init__(self, inner: Leaf, func: str, window: float) -> None:
        super().__init__(inner.sensor, f"{inner.sensor} {func}({_fmt(window)})")
        self.inner = inner
        self.func = func
        self.window = window
        self.items: deque[tuple[float, float]] = deque()
        self.total = 0.0

    def update(self, value: Value, mono: float) -> int:
        cls = value.__class__
        if cls is not float and cls is not int:
            return BAD
        items = self.items
        items.append((mono, value))  # type: ignore[arg-type]
        self.total += value  # type: ignore[operator]
        horizon = mono - self.window
        while items and items[0][0] < horizon:
            self.total -= items.popleft()[1]
        aggregate = self.aggregate()
        if aggregate is None:
            return UNCHANGED
        self.value = aggregate
        self.known = True
        result = self.inner.update(aggregate, mono)
        self.met = self.inner.met
        return result

    def aggregate(self) -> float | None:  # noqa: PLR0911 - one return per function
        items = self.items
        if not items:
            return None
        if self.func == "avg":
            if len(items) == 1:  # no float drift on the common single-sample case
                return items[0][1]
            return self.total / len(items)
        if self.func == "min":
            return min(v for _, v in items)
        if self.func == "max":
            return max(v for _, v in items)
        first, last = items[0], items[-1]
        if last[0] <= first[0]:
            return None
        return (last[1] - first[1]) / (last[0] - first[0]) * 60.0

    def reset(self) -> None:
        super().reset()
        self.inner.reset()
        self.items.clear()
        self.total = 0.0

    def load(self, items: list[tuple[float, float]]) -> None:
        self.items = deque(items)
        self.total = math.fsum(v for _, v in items)


class StaleLeaf(Leaf):
    """Met when the sensor sent nothing for ``after`` seconds; a reading un-meets it."""

    __slots__ = ("after", "slot")

    def __init__(self, sensor: str, label: str, after: float) -> None:
        super().__init__(sensor, label)
        self.after = after
        self.slot: Any = None  # the engine's SensorSlot (``last_seen``), set by the compiler

    def update(self, value: Value, mono: float) -> int:
        self.value = value
        self.known = True
        if self.met:
            self.met = False
            return CHANGED
        return UNCHANGED


class AllNode:
    __slots__ = ("children",)

    def __init__(self, children: list[Node]) -> None:
        self.children = children

    def truth(self) -> bool:
        return all(child.truth() for child in self.children)

    def leaves(self) -> list[Leaf]:
        return [leaf for child in self.children for leaf in child.leaves()]


class AnyNode(AllNode):
    __slots__ = ()

    def truth(self) -> bool:
        return any(child.truth() for child in self.children)


Node = Leaf | AllNode


def _fmt(seconds: float) -> str:
    from rules.durations import format_duration  # noqa: PLC0415

    return format_duration(seconds)
