"""The spool's policy, pure: kinds and priorities, overflow, TTL, redelivery window.

No I/O and no clock of its own: every function takes ``now`` or the figures it decides on,
so the rules are tested table-driven and with hypothesis on a fake clock
(``tests/bridge/test_policy.py``). :mod:`bridge.spool` carries the decisions out in SQLite.

Overflow policy, as stated to users (docs/bridge.md):

- The cap counts *row bytes*: the event's JSON data plus its key plus a fixed
  :data:`ROW_OVERHEAD` per row. The SQLite file is larger by its page overhead.
- When a batch would take the spool over the cap, rows are dropped from the **lowest
  priority first** (readings, then commands, then rule events), and inside a priority the
  **oldest first**; the incoming batch counts as the newest rows of its priorities, so a
  batch of readings arriving at a spool full of rule events is what gets dropped.
- Dropping never reorders: it removes the head of a stream, it never moves a row.
- Every dropped row is counted by reason (``cap``, ``disk_full``, ``ttl``, ``duplicate``)
  and priority, and logged.
- The compact spool stores a group of rows per commit and lane; the policy stays per
  row: a drop that ends inside a group raises the lane's floor (:mod:`bridge.groups`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum

__all__ = [
    "KIND_NAMES",
    "PRIORITY_OF_KIND",
    "ROW_OVERHEAD",
    "DropReason",
    "Kind",
    "OverflowPlan",
    "Priority",
    "RowMeta",
    "Usage",
    "apply_overflow",
    "expired_prefix",
    "lane_priorities",
    "overflow_plan",
    "row_size",
]

ROW_OVERHEAD = 32
"""Bytes counted per row on top of data and key (sequence, kind, times, B-tree cell)."""


class Kind(IntEnum):
    """What a spool row holds; stored as this integer in ``rows.kind``."""

    READING = 1
    RULE_FIRED = 2
    RULE_CLEARED = 3
    RULE_EMITTED = 4
    RULE_STALE = 5
    COMMAND = 6
    DEPLOYMENT_APPLIED = 7
    DEPLOYMENT_REJECTED = 8
    DEPLOYMENT_ROLLED_BACK = 9
    COMMAND_RESULT = 10


KIND_NAMES: dict[int, str] = {
    Kind.READING: "reading",
    Kind.RULE_FIRED: "rule.fired",
    Kind.RULE_CLEARED: "rule.cleared",
    Kind.RULE_EMITTED: "rule.emitted",
    Kind.RULE_STALE: "rule.stale",
    Kind.COMMAND: "command",
    Kind.DEPLOYMENT_APPLIED: "deployment.applied",
    Kind.DEPLOYMENT_REJECTED: "deployment.rejected",
    Kind.DEPLOYMENT_ROLLED_BACK: "deployment.rolled_back",
    Kind.COMMAND_RESULT: "command.result",
}


class Priority(IntEnum):
    """Smaller drains first and is dropped last."""

    EVENT = 0
    COMMAND = 1
    READING = 2


PRIORITY_OF_KIND: dict[Kind, Priority] = {
    Kind.READING: Priority.READING,
    Kind.RULE_FIRED: Priority.EVENT,
    Kind.RULE_CLEARED: Priority.EVENT,
    Kind.RULE_EMITTED: Priority.EVENT,
    Kind.RULE_STALE: Priority.EVENT,
    Kind.COMMAND: Priority.COMMAND,
    Kind.DEPLOYMENT_APPLIED: Priority.EVENT,
    Kind.DEPLOYMENT_REJECTED: Priority.EVENT,
    Kind.DEPLOYMENT_ROLLED_BACK: Priority.EVENT,
    Kind.COMMAND_RESULT: Priority.EVENT,
}


class DropReason:
    CAP = "cap"
    DISK_FULL = "disk_full"
    TTL = "ttl"
    DUPLICATE = "duplicate"


def row_size(data_len: int, key_len: int) -> int:
    return data_len + key_len + ROW_OVERHEAD


def lane_priorities(topic_of_kind: Mapping[Kind, str]) -> dict[Kind, int]:
    """The drain lane (stored priority) of each kind for a topic mapping.

    Kinds that share a Kafka topic share the lane of the most urgent of them: the spool
    drains lane by lane, so giving two kinds of one topic different lanes would reorder
    a device's records inside that topic.
    """
    best: dict[str, int] = {}
    for kind, topic in topic_of_kind.items():
        prio = int(PRIORITY_OF_KIND[kind])
        best[topic] = min(best.get(topic, prio), prio)
    return {kind: best[topic] for kind, topic in topic_of_kind.items()}


# ---------------------------------------------------------------------- overflow
@dataclass(frozen=True, slots=True)
class Usage:
    rows: int = 0
    bytes: int = 0


@dataclass(frozen=True, slots=True)
class OverflowPlan:
    """Bytes to free per priority: from the stored rows (oldest first), then from the batch."""

    stored: dict[int, int]
    incoming: dict[int, int]

    @property
    def empty(self) -> bool:
        return not self.stored and not self.incoming


def overflow_plan(usage: Mapping[int, Usage], incoming: Mapping[int, int], cap: int) -> OverflowPlan:
    """What to drop so that stored + incoming bytes fit in ``cap``.

    ``usage`` is the stored bytes per priority, ``incoming`` the batch's bytes per
    priority. Lowest priority (largest number) first; inside one, stored rows (older)
    before incoming rows (newer). The caller drops whole rows until each target is met.
    """
    total = sum(u.bytes for u in usage.values()) + sum(incoming.values())
    excess = total - cap
    stored: dict[int, int] = {}
    batch: dict[int, int] = {}
    for prio in sorted(set(usage) | set(incoming), reverse=True):
        if excess <= 0:
            break
        have = usage[prio].bytes if prio in usage else 0
        take = min(excess, have)
        if take > 0:
            stored[prio] = take
            excess -= take
        have_in = incoming.get(prio, 0)
        take_in = min(excess, have_in)
        if take_in > 0:
            batch[prio] = take_in
            excess -= take_in
    return OverflowPlan(stored, batch)


@dataclass(frozen=True, slots=True)
class RowMeta:
    """A row as the overflow policy sees it (``seq`` orders rows: smaller is older)."""

    seq: int
    prio: int
    size: int


def apply_overflow(rows: Sequence[RowMeta], plan: OverflowPlan, incoming_from: int) -> set[int]:
    """The ``seq`` of every row ``plan`` drops, rows with ``seq >= incoming_from`` being the batch.

    The reference for what :class:`bridge.spool.Spool` does with SQL: per priority,
    whole rows oldest first until the target bytes are freed.
    """
    dropped: set[int] = set()
    for targets, incoming in ((plan.stored, False), (plan.incoming, True)):
        for prio, target in targets.items():
            freed = 0
            for row in sorted(rows, key=lambda r: r.seq):
                if freed >= target:
                    break
                if row.prio == prio and (row.seq >= incoming_from) == incoming:
                    dropped.add(row.seq)
                    freed += row.size
    return dropped


# ---------------------------------------------------------------------- TTL
def expired_prefix(spooled_at: Iterable[tuple[int, float]], now: float, ttl: float) -> int | None:
    """The last ``seq`` of the leading run of rows older than ``ttl``, or None.

    Rows come in ``seq`` order. The run stops at the first row still young, even if a
    later row looks older (a wall clock that stepped back): TTL never reorders a stream.
    """
    cutoff = now - ttl
    last: int | None = None
    for seq, at in spooled_at:
        if at >= cutoff:
            break
        last = seq
    return last


