"""The settle check after a deployment, pure: health snapshots in, the problem (or None) out.

A deployment settles when, for the settle time, the pipeline keeps acknowledging (the
``/healthz`` pipeline reasons: spool writer up, no ingest stall, nothing restarting in a
loop), no component restarted three times, and no rule tripped its loop guard.
:func:`snapshot` reads a running gateway; :func:`settle_problem` decides.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.runtime import Runtime

__all__ = ["RESTARTS_LIMIT", "HealthSnapshot", "settle_problem", "snapshot"]

RESTARTS_LIMIT = 3
"""Restarts of one component during the settle time that fail it."""


@dataclass(frozen=True, slots=True)
class HealthSnapshot:
    loop_trips: Mapping[str, int]
    """Per rule id: times its loop guard dropped a fire."""
    limits: Mapping[str, int]
    """Per rule id: its max_fires_per_minute."""
    restarts: Mapping[str, int]
    """Per component."""
    reasons: tuple[str, ...] = ()
    """What /healthz's pipeline check says is wrong now."""


def settle_problem(before: HealthSnapshot, now: HealthSnapshot) -> str | None:
    """What went wrong since ``before`` (a rule new since then starts from 0), or None."""
    for rule, trips in sorted(now.loop_trips.items()):
        if trips > before.loop_trips.get(rule, 0):
            limit = now.limits.get(rule)
            return f"rule {rule} tripped its loop guard (more than {limit} fires a minute)"
    new = [reason for reason in now.reasons if reason not in before.reasons]
    if new:  # a problem there before the deployment is not its doing (and may be what it fixes)
        return new[0]
    for name, count in sorted(now.restarts.items()):
        more = count - before.restarts.get(name, 0)
        if more >= RESTARTS_LIMIT:
            return f"component {name} restarted {more} times"
    return None


def snapshot(rt: Runtime) -> HealthSnapshot:
    from gateway.metrics import pipeline_health  # noqa: PLC0415

    rules = rt.engine.rules
    return HealthSnapshot(
        loop_trips={r.id: r.loop_trips for r in rules},
        limits={r.id: r.max_fpm for r in rules},
        restarts=dict(rt.state.restarts),
        reasons=tuple(pipeline_health(rt).reasons),
    )
