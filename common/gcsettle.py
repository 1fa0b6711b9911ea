"""The cyclic garbage collector, set for a long-running process with a hot path.

CPython's defaults (a gen0 pass every 700 allocations, a full pass every ~10 of those
escalated twice) suit short scripts. In edgegw's processes nearly everything the hot path
allocates is freed by reference counting (a test guards the pipeline's batches), so the
collector finds next to nothing, but its full passes walk every object start-up built
(modules, the config, compiled rules, librdkafka's wrappers): 20-45 ms each with the GIL
held, every 2-3 s in the uplink process at 5k readings/s (measured with ``gc.callbacks``).

:func:`settle` is called once start-up is done: it collects what start-up left, moves the
survivors into the permanent generation (``gc.freeze``: no pass walks them again), and
makes gen0 passes rarer.
"""

from __future__ import annotations

import gc

__all__ = ["GC_THRESHOLDS", "settle"]

GC_THRESHOLDS = (20_000, 20, 50)
"""gen0 collects after 20,000 allocations (CPython: 700), gen1 after 20 of those, gen2 after 50."""


def settle() -> None:
    """Collect, freeze what survived start-up, and set :data:`GC_THRESHOLDS`."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
