"""The cyclic garbage collector, set for a long-running process with a hot path.

CPython's defaults (a gen0 pass every 700 allocations, a full pass every ~10 of those
escalated twice) suit short scripts. In edgegw's processes nearly everything the hot path
allocates is freed by reference counting (a test guards the pipeline's batches), so the
collector finds next to nothing, but its full passes walk every object start-up built
(modules, the config, compiled rules, librdkafka's wrappers): 20-45 ms each with the GIL
held, every 2-3 s in the uplink process at 5k readings/s (measured with ``gc.callbacks``).

:func:`settle` is called once start-up is done: it collects what start-up left, moves the
survivors into the permanent generation (``gc.freeze``: no pass walks them again), and
makes gen0 passes rarer. It also starts :data:`PAUSES`, which times every pass: ``/metrics``
shows them (``edgegw_gc_pause_seconds_total``), so a change that brings per-reading cycles
back shows up in production, not only in a benchmark.
"""

from __future__ import annotations

import gc
import time
from typing import Any

__all__ = ["GC_THRESHOLDS", "PAUSES", "GcPauses", "settle"]

GC_THRESHOLDS = (20_000, 20, 50)
"""gen0 collects after 20,000 allocations (CPython: 700), gen1 after 20 of those, gen2 after 50."""


class GcPauses:
    """How long the collector's passes took (``gc.callbacks``; the GIL is held throughout)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.longest = 0.0
        self.passes = 0
        self._began = 0.0
        self._installed = False

    def install(self) -> None:
        if not self._installed:
            self._installed = True
            gc.callbacks.append(self._callback)

    def _callback(self, phase: str, _info: dict[str, Any]) -> None:
        # the collector runs under the GIL: one pass at a time, whichever thread triggers it
        if phase == "start":
            self._began = time.perf_counter()
            return
        took = time.perf_counter() - self._began
        self.seconds += took
        self.passes += 1
        self.longest = max(self.longest, took)


PAUSES = GcPauses()
"""This process's collector passes since :func:`settle`."""


def settle() -> None:
    """Collect, freeze what survived start-up, set :data:`GC_THRESHOLDS`, time the passes."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    PAUSES.install()
