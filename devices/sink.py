"""The edge between a source and the pipeline: typed batches with an explicit ack state.

A source decodes what one wakeup brought into a :class:`SourceBatch` and hands it to its
:class:`BatchSink` (the pipeline, gateway/pipeline.py). The pipeline settles every batch
exactly once, from the event loop:

::

    PENDING --durable()--> DURABLE --(source sends the PUBACKs)--> ACKED
       |                      |
       +-------void()---------+--> VOID   (the spool failed, the connection was lost:
                                            nobody will make it durable; the broker
                                            redelivers what was not acknowledged)

``durable()`` means every reading of the batch is committed to the spool (or was dropped
by the spool's stated policy, counted). ``void()`` means it never will be: an MQTT source
then drops its connection so that the broker sends the unacknowledged messages again; a
serial source counts the readings as lost (a serial line has no redelivery).
"""

from __future__ import annotations

from collections.abc import Callable
from enum import IntEnum
from typing import Protocol

from gateway.model import Origin, Reading

__all__ = ["BatchSink", "BatchState", "Poison", "SourceBatch"]


class BatchState(IntEnum):
    PENDING = 0
    DURABLE = 1
    ACKED = 2
    VOID = 3


class Poison:
    """A message whose processing raised something no one expected (a decoder bug): kept
    in the spool's dead-letter table with its topic and payload, then acknowledged."""

    __slots__ = ("device_id", "error", "payload", "reason", "topic")

    def __init__(self, device_id: str, reason: str, topic: str, payload: bytes, error: str) -> None:
        self.device_id = device_id
        self.reason = reason
        self.topic = topic
        self.payload = payload
        self.error = error


class SourceBatch:
    """What one wakeup of a source brought. Subclasses react to the transitions
    (:meth:`_on_durable`, :meth:`_on_void`); every transition happens on the event loop.

    - ``readings``: the decoded readings, in arrival order;
    - ``origins``: for each reading, the MQTT QoS 1 message it came from, or None;
    - ``messages``: every QoS 1 message of the batch, readings or not, in arrival order
      (the pipeline's redelivery check decides on these);
    - ``poison``: messages whose decoding raised unexpectedly.
    """

    __slots__ = ("messages", "on_acked", "origins", "poison", "readings", "received", "spool_seq", "state")

    def __init__(self, readings: list[Reading], *, origins: list[Origin | None] | None = None,
                 messages: list[Origin] | None = None, poison: list[Poison] | None = None,
                 received: float = 0.0) -> None:  # fmt: skip
        self.readings = readings
        self.origins = origins
        self.messages = messages if messages is not None else []
        self.poison = poison if poison is not None else []
        self.received = received
        """Monotonic time the batch's first message was read."""
        self.state = BatchState.PENDING
        self.spool_seq = 0
        """The highest spool sequence of the batch's rows (set by the pipeline when durable)."""
        self.on_acked: Callable[[SourceBatch], None] | None = None
        """Called once the source acknowledged the batch to its peer (the PUBACKs went out)."""

    def describe(self, index: int) -> tuple[str, bytes]:
        """Topic (or sensor) and raw payload of the message behind ``readings[index]``,
        for the dead-letter table."""
        reading = self.readings[index]
        return reading.sensor, repr(reading.value).encode()

    def durable(self) -> None:
        """Every reading is committed (PENDING -> DURABLE); ignored once VOID."""
        if self.state is BatchState.PENDING:
            self.state = BatchState.DURABLE
            self._on_durable()

    def acked(self) -> None:
        """The source acknowledged it to its peer (DURABLE -> ACKED)."""
        if self.state is BatchState.DURABLE:
            self.state = BatchState.ACKED
            if self.on_acked is not None:
                self.on_acked(self)

    def void(self) -> None:
        """Nobody will make it durable (PENDING or DURABLE -> VOID); ignored once ACKED."""
        if self.state is BatchState.PENDING or self.state is BatchState.DURABLE:
            self.state = BatchState.VOID
            self._on_void()

    def _on_durable(self) -> None:
        """Hook: the batch became durable (an MQTT source sends its PUBACKs)."""

    def _on_void(self) -> None:
        """Hook: the batch was voided."""


class BatchSink(Protocol):
    """Receives each batch a source decoded. Never raises: the pipeline settles the batch
    (durable or void) later, on the event loop."""

    def __call__(self, batch: SourceBatch, /) -> None: ...
