"""The settle check, table-driven on plain snapshots."""

from __future__ import annotations

import pytest

from gateway.deploy.settle import HealthSnapshot, settle_problem

BEFORE = HealthSnapshot({"heating": 0, "garage": 2}, {"heating": 10, "garage": 3}, {"mqtt-source": 1})


def _now(trips: dict[str, int] | None = None, restarts: dict[str, int] | None = None,
         reasons: tuple[str, ...] = ()) -> HealthSnapshot:  # fmt: skip
    return HealthSnapshot(trips or {"heating": 0, "garage": 2}, {"heating": 10, "garage": 3, "new": 2},
                          restarts or {"mqtt-source": 1}, reasons)  # fmt: skip


@pytest.mark.parametrize(
    ("now", "problem"),
    [
        (_now(), None),
        (
            _now(trips={"heating": 0, "garage": 3}),
            "rule garage tripped its loop guard (more than 3 fires a minute)",
        ),
        (_now(trips={"heating": 0, "garage": 2, "new": 1}), "rule new tripped its loop guard"),
        (_now(reasons=("spool writer thread is not running",)), "spool writer thread is not running"),
        (_now(restarts={"mqtt-source": 3}), None),  # two more: a broker blip, not a loop
        (_now(restarts={"mqtt-source": 4}), "component mqtt-source restarted 3 times"),
        (_now(restarts={"mqtt-source": 1, "serial:boiler": 3}), "component serial:boiler restarted 3 times"),
    ],
)
def test_settle_problem(now: HealthSnapshot, problem: str | None) -> None:
    found = settle_problem(BEFORE, now)
    if problem is None:
        assert found is None
    else:
        assert found is not None
        assert found.startswith(problem)


def test_a_problem_the_gateway_had_before_the_deployment_does_not_roll_it_back() -> None:
    """Else a gateway already in trouble could never get the deployment that fixes it."""
    stalled = ("mqtt: no PUBACK for 45 s",)
    before = HealthSnapshot({}, {}, {}, stalled)
    assert settle_problem(before, HealthSnapshot({}, {}, {}, stalled)) is None
    worse = HealthSnapshot({}, {}, {}, (*stalled, "spool writer thread is not running"))
    assert settle_problem(before, worse) == "spool writer thread is not running"
