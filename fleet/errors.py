"""The fleet view's errors: a branch of edgegw's one error tree.

::

    GatewayError                  (gateway.errors)
    └── FleetError                the fleet view (``edgegw fleet``)
        ├── FleetStoreError       the read model's database (SQLite, PostgreSQL)
        │   └── StaleOffsetsError another instance moved a partition's offset first (fenced)
        └── FleetConsumerError    Kafka refused or lost the consumer

Library exceptions (``sqlite3.Error``, ``psycopg.Error``, ``KafkaException``) are
converted at the adapter edge. An event that cannot be projected is never an error:
it goes to the dead-letter table with its reason.
"""

from __future__ import annotations

from gateway.errors import GatewayError

__all__ = ["FleetConsumerError", "FleetError", "FleetStoreError", "StaleOffsetsError"]


class FleetError(GatewayError):
    """Root of the fleet view's errors."""


class FleetStoreError(FleetError):
    """The read model's database failed us."""


class StaleOffsetsError(FleetStoreError):
    """A batch's offsets no longer follow the stored ones: another instance committed the
    partition since we loaded it (a rebalance we were too slow for). The batch is rolled
    back whole; the consumer reloads and seeks to the stored offsets."""


class FleetConsumerError(FleetError):
    """The Kafka consumer could not start or was refused."""
