"""Which MQTT messages the spool holds already: the redelivery check, pure.

After a crash between a spool commit and its PUBACK, the broker sends the message again
with the DUP flag and its *original* packet id (MQTT 3.1.1 and 5, 4.4). The ledger keeps,
per packet id, the digest (packet id, topic, payload) of the last message taken with that
id: a DUP message whose id and digest match is the same message again and is not taken
twice (its readings neither run the rules again nor reach the spool again).

Why per packet id, and not a time window of digests: a broker may hand out packet ids in
sequence (Mosquitto does) or reuse the lowest free one (others do). With the lowest free
id, a sensor that reports ``ON`` every minute gets the same id, topic and payload every
time: a window of digests would take a redelivery of the new message for the old one
and lose it. But a broker reuses an id only after the PUBACK for it arrived, so a
*non-DUP* message with id X proves that the message held for X was acknowledged and
will never come again: the slot is overwritten then. What is left: a crash after such a
reused id arrived and before its batch was committed (one commit interval, milliseconds)
leaves the old slot on disk; if the new message says exactly what the old one said, its
redelivery is taken for the old one. docs/bridge.md states it.

A slot never expires by age: the gateway may be down for days before the broker
redelivers. At most ``capacity`` slots are kept (the least recently written go first);
the broker has at most its in-flight window of messages unacknowledged, far fewer.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence

from gateway.model import Origin

__all__ = ["DeliveryLedger"]


class DeliveryLedger:
    """The redelivery check. Single-threaded: the pipeline calls it on the event loop."""

    __slots__ = ("_committed", "_inflight", "capacity")

    def __init__(self, committed: Iterable[tuple[int, int]] = (), *, capacity: int = 16384) -> None:
        self.capacity = max(1, capacity)
        self._committed: OrderedDict[int, int] = OrderedDict()
        for mid, digest in committed:
            self._committed[mid] = digest
            self._committed.move_to_end(mid)
        while len(self._committed) > self.capacity:
            self._committed.popitem(last=False)
        self._inflight: dict[int, int] = {}

    def take(self, origin: Origin) -> bool:
        """True when the message is new (process and spool it); False when it is a
        redelivery of one already taken (committed, or handed to the spool and not yet)."""
        mid, digest = origin.mid, origin.digest
        if origin.dup:
            held = self._inflight.get(mid)
            if held == digest:
                return False
            if held is None and self._committed.get(mid) == digest:
                return False
        self._inflight[mid] = digest
        return True

    def durable(self, taken: Sequence[Origin]) -> None:
        """The batch that took these messages is committed."""
        inflight, committed = self._inflight, self._committed
        for origin in taken:
            mid = origin.mid
            if inflight.get(mid) == origin.digest:
                del inflight[mid]
            committed[mid] = origin.digest
            committed.move_to_end(mid)
        while len(committed) > self.capacity:
            committed.popitem(last=False)

    def void(self) -> None:
        """Every batch in flight was voided (the spool failed): they come again."""
        self._inflight.clear()

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    def __len__(self) -> int:
        return len(self._committed)
