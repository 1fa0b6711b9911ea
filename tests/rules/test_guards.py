"""Time-of-day, weekday and sun guards, across daylight-saving changes."""

from __future__ import annotations

import datetime as dt

import pytest
from astral import Observer
from astral.sun import sunrise, sunset

from rules.guards import TimeGuard
from rules.schema import Location, TimeWindow
from tests.rules.helpers import Sim, one_rule, ruleset

BERLIN = Location(timezone="Europe/Berlin", latitude=52.52, longitude=13.40)


def _wall(iso: str) -> float:
    return dt.datetime.fromisoformat(iso).timestamp()


@pytest.mark.parametrize(
    ("window", "iso", "is_open"),
    [
        pytest.param(
            {"after": "22:00", "before": "06:00"}, "2026-01-05T20:59:59+00:00", False, id="winter 21:59 local"
        ),
        pytest.param(
            {"after": "22:00", "before": "06:00"}, "2026-01-05T21:00:00+00:00", True, id="winter 22:00 local"
        ),
        pytest.param(
            {"after": "22:00", "before": "06:00"}, "2026-01-06T04:59:00+00:00", True, id="winter 05:59 local"
        ),
        pytest.param(
            {"after": "22:00", "before": "06:00"}, "2026-01-06T05:00:00+00:00", False, id="winter 06:00 local"
        ),
        # Spring forward on 2026-03-29 (02:00 -> 03:00): 06:00 local is 04:00 UTC.
        pytest.param(
            {"after": "22:00", "before": "06:00"}, "2026-03-29T03:59:00+00:00", True, id="DST day 05:59 CEST"
        ),
        pytest.param(
            {"after": "22:00", "before": "06:00"}, "2026-03-29T04:00:00+00:00", False, id="DST day 06:00 CEST"
        ),
        # Fall back on 2026-10-25 (03:00 -> 02:00): 06:00 local is 05:00 UTC.
        pytest.param(
            {"after": "22:00", "before": "06:00"}, "2026-10-25T04:59:00+00:00", True, id="fall back 05:59 CET"
        ),
        pytest.param(
            {"after": "22:00", "before": "06:00"},
            "2026-10-25T05:00:00+00:00",
            False,
            id="fall back 06:00 CET",
        ),
        pytest.param(
            {"after": "08:00", "before": "18:00"}, "2026-07-01T06:00:00+00:00", True, id="summer 08:00 local"
        ),
        pytest.param(
            {"after": "08:00", "before": "18:00"}, "2026-07-01T05:59:00+00:00", False, id="summer 07:59 local"
        ),
        pytest.param({"after": "08:00"}, "2026-07-01T21:59:00+00:00", True, id="after only: until midnight"),
        pytest.param({"before": "08:00"}, "2026-07-01T05:00:00+00:00", True, id="before only: from midnight"),
        pytest.param(
            {"weekdays": ["sat", "sun"]}, "2026-01-04T22:59:00+00:00", True, id="sunday 23:59 local"
        ),
        pytest.param(
            {"weekdays": ["sat", "sun"]}, "2026-01-04T23:00:00+00:00", False, id="monday 00:00 local"
        ),
        pytest.param(
            {"after": "07:00", "before": "09:00", "weekdays": ["mon"]},
            "2026-01-05T07:00:00+00:00",
            True,
            id="monday 08:00",
        ),
        pytest.param(
            {"after": "07:00", "before": "09:00", "weekdays": ["tue"]},
            "2026-01-05T07:00:00+00:00",
            False,
            id="not tuesday",
        ),
    ],
)
def test_time_window(window: dict[str, object], iso: str, is_open: bool) -> None:
    guard = TimeGuard(TimeWindow.model_validate(window), BERLIN)
    assert guard.is_open(_wall(iso)) is is_open


def test_sun_window_follows_astral() -> None:
    guard = TimeGuard(TimeWindow(after="sunset-30m", before="sunrise+15m"), BERLIN)
    observer = Observer(latitude=52.52, longitude=13.40)
    day = dt.date(2026, 6, 21)
    dusk = sunset(observer, date=day).timestamp() - 1800
    dawn = sunrise(observer, date=day).timestamp() + 900
    assert not guard.is_open(dusk - 60)
    assert guard.is_open(dusk + 60)
    assert guard.is_open(dawn - 60)
    assert not guard.is_open(dawn + 60)
    assert guard.next_change(dusk - 60) == pytest.approx(dusk)


def test_polar_night_has_no_sunset_so_the_window_stays_closed() -> None:
    tromso = Location(timezone="Europe/Oslo", latitude=69.65, longitude=18.96)
    guard = TimeGuard(TimeWindow(after="sunrise", before="sunset"), tromso)
    noon = _wall("2026-12-21T11:00:00+00:00")
    assert not guard.is_open(noon)
    assert guard.next_change(noon) > noon


def test_next_change_across_spring_forward() -> None:
    guard = TimeGuard(TimeWindow(after="22:00", before="06:00"), BERLIN)
    assert guard.next_change(_wall("2026-03-29T01:00:00+00:00")) == _wall("2026-03-29T04:00:00+00:00")


def test_rule_fires_when_the_window_opens_and_clears_when_it_closes() -> None:
    text = one_rule("{sensor: s/v, equals: true}", 'during: {after: "22:00", before: "06:00"}')
    rules = ruleset(text.replace("rules:", "location: {timezone: Europe/Berlin}\nrules:", 1))
    start = _wall("2026-01-05T20:00:00+00:00")  # 21:00 local
    sim = Sim(rules, start=start)
    sim.read(0, "s/v", True)
    sim.advance(12 * 3600)
    assert sim.log() == [(3600, "fired r"), (9 * 3600, "cleared r")]
    blocked = sim.engine.trace("r")["outcomes"]["blocked_by_guard"]
    assert blocked[0]["detail"] == "outside during (after 22:00 before 06:00)"
    assert blocked[0]["values"] == {"s/v": True}


def test_window_across_dst_in_the_engine() -> None:
    text = one_rule("{sensor: s/v, equals: true}", 'during: {after: "22:00", before: "06:00"}')
    rules = ruleset(text.replace("rules:", "location: {timezone: Europe/Berlin}\nrules:", 1))
    start = _wall("2026-03-28T20:00:00+00:00")  # 21:00 CET, the night clocks go forward
    sim = Sim(rules, start=start)
    sim.read(0, "s/v", True)
    sim.advance(12 * 3600)
    # Opens at 22:00 CET (21:00 UTC), closes at 06:00 CEST (04:00 UTC): 7 hours later.
    assert sim.log() == [(3600, "fired r"), (8 * 3600, "cleared r")]
