"""The fleet view: an event-sourced read model of every gateway and device, built from Kafka.

It runs in the centre, not on a gateway (``pip install edgegw[fleet]``), and imports of
the rest of edgegw only leaves: the error root, the Kafka config models and client
settings of ``bridge``, the config types of ``common``.

- :mod:`fleet.projection`: the pure core, records in, read-model changes out;
- :mod:`fleet.schemas`: the event contract (``schemas/events/``), compiled;
- :mod:`fleet.compat`: which schema changes old consumers could not read;
- :mod:`fleet.store`: the store protocol; :mod:`fleet.sqlite` and :mod:`fleet.postgres`;
- :mod:`fleet.consumer`: the Kafka consumer loop (``serve``) and the replay (``rebuild``);
- :mod:`fleet.api` and :mod:`fleet.web`: the JSON API, ``/metrics`` and the page.
"""

from __future__ import annotations

from fleet.errors import FleetConsumerError, FleetError, FleetStoreError, StaleOffsetsError
from fleet.model import Changes, Incoming
from fleet.projection import Projector
from fleet.schemas import Validators

__all__ = [
    "Changes",
    "FleetConsumerError",
    "FleetError",
    "FleetStoreError",
    "Incoming",
    "Projector",
    "StaleOffsetsError",
    "Validators",
]
