"""The edge between a source and the runtime: batches of readings with an ack handle."""

from __future__ import annotations

from typing import Protocol

from gateway.model import Reading

__all__ = ["Ack", "ReadingSink"]


class Ack(Protocol):
    """Call once the batch is durable (committed to the spool); safe from any thread.

    For MQTT it releases the PUBACKs of the batch's QoS 1 messages; for serial it does
    nothing.
    """

    def __call__(self) -> None: ...


class ReadingSink(Protocol):
    """Receives each batch of readings a source decoded, with the batch's ack handle."""

    def __call__(self, readings: list[Reading], ack: Ack, /) -> None: ...
