"""The small pure pieces: device health, the bad-input counter."""

from __future__ import annotations

from structlog.testing import capture_logs

from devices.config import DeviceConfig
from devices.errors_counter import BadInputCounter
from devices.health import DeviceState, HealthChange, HealthTracker


def test_health_online_stale_back() -> None:
    tracker = HealthTracker({"a": 10.0, "b": 60.0})
    assert tracker.snapshot(0.0) == {"a": DeviceState.UNKNOWN, "b": DeviceState.UNKNOWN}
    assert tracker.seen("a", 1.0, wall=1000.0) == HealthChange(
        "a", DeviceState.UNKNOWN, DeviceState.ONLINE, 1.0
    )
    assert tracker.seen("a", 2.0) is None
    assert tracker.check(12.0) == []
    assert tracker.state("a", 12.5) is DeviceState.OFFLINE  # state() already knows
    assert tracker.check(12.5) == [HealthChange("a", DeviceState.ONLINE, DeviceState.OFFLINE, 12.5)]
    assert tracker.check(13.0) == []
    assert tracker.seen("a", 20.0) == HealthChange("a", DeviceState.OFFLINE, DeviceState.ONLINE, 20.0)
    assert tracker.get("a").messages == 3
    assert tracker.seen("unknown-device", 1.0) is None


def test_bad_input_logged_once_per_interval_per_device() -> None:
    counter = BadInputCounter(interval=60.0)
    with capture_logs() as logs:
        for i in range(1000):
            counter.record("a", "invalid_json", "x", now=float(i) * 0.01)
        counter.record("b", "not_finite", "x", now=5.0)
        counter.record("a", "too_large", "x", now=61.0)
    assert counter.counts[("a", "invalid_json")] == 1000
    assert counter.by_reason("a") == {"invalid_json": 1000, "too_large": 1}
    assert counter.total() == 1002
    assert [(e["device"], e["reason"], e["suppressed_since_last"]) for e in logs] == [
        ("a", "invalid_json", 0),
        ("b", "not_finite", 0),
        ("a", "too_large", 999),
    ]


def test_tracker_for_configured_devices() -> None:
    tracker = HealthTracker.for_devices([DeviceConfig(id="a", topic="a", stale_after=30.0)])
    assert tracker.get("a").stale_after == 30.0
