"""Time-of-day, weekday and sunrise/sunset guards in the configured time zone.

Wall-clock bounds are resolved per local date with :mod:`zoneinfo`, so "22:00" is
22:00 local time on both sides of a daylight-saving change. Sunrise and sunset come
from :mod:`astral` for the configured latitude/longitude. Where the sun does not rise
or set on a date (polar day or night) a sun bound does not exist and the window stays
closed that day.
"""

from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo

from astral import Observer
from astral.sun import sunrise, sunset

from rules.durations import parse_duration
from rules.schema import WEEKDAYS, Location, TimeWindow

__all__ = ["TimeGuard"]

_BOUND = re.compile(r"^(?:(\d{1,2}):(\d{2})|(sunrise|sunset)(?:([+-])(.+))?)$")
_Bound = tuple[str, float]  # ("clock", seconds after midnight) or ("sunrise"/"sunset", offset)


def _parse_bound(text: str | None) -> _Bound | None:
    if text is None:
        return None
    match = _BOUND.match(text)
    if match is None:  # pragma: no cover - the schema validated it
        raise ValueError(text)
    if match.group(1) is not None:
        return ("clock", int(match.group(1)) * 3600.0 + int(match.group(2)) * 60.0)
    offset = parse_duration(match.group(5)) if match.group(5) else 0.0
    return (match.group(3), -offset if match.group(4) == "-" else offset)


class TimeGuard:
    """Is a :class:`~rules.schema.TimeWindow` open at a wall time, and when may it change."""

    __slots__ = ("_after", "_before", "_cache", "_observer", "_tz", "_weekdays", "text")

    def __init__(self, window: TimeWindow, location: Location) -> None:
        self._tz = ZoneInfo(location.timezone)
        self._after = _parse_bound(window.after)
        self._before = _parse_bound(window.before)
        self._weekdays = (
            frozenset(WEEKDAYS.index(day) for day in window.weekdays) if window.weekdays else None
        )
        self._observer: Observer | None = None
        if location.latitude is not None and location.longitude is not None:
            self._observer = Observer(latitude=location.latitude, longitude=location.longitude)
        self._cache: dict[dt.date, tuple[float | None, float | None, float]] = {}
        parts = [f"after {window.after}"] if window.after else []
        parts += [f"before {window.before}"] if window.before else []
        parts += [",".join(window.weekdays)] if window.weekdays else []
        self.text = " ".join(parts)

    def _epoch(self, day: dt.date, bound: _Bound | None) -> float | None:
        if bound is None:
            return None
        kind, amount = bound
        if kind == "clock":
            hours, rest = divmod(int(amount), 3600)
            local = dt.datetime(day.year, day.month, day.day, hours, rest // 60, tzinfo=self._tz)
            return local.timestamp()
        if self._observer is None:  # pragma: no cover - rules.checks refuses this
            return None
        func = sunrise if kind == "sunrise" else sunset
        try:
            return func(self._observer, date=day, tzinfo=self._tz).timestamp() + amount
        except ValueError:  # the sun does not rise or set on this date here
            return None

    def _bounds(self, day: dt.date) -> tuple[float | None, float | None, float]:
        cached = self._cache.get(day)
        if cached is None:
            if len(self._cache) > 16:
                self._cache.clear()
            midnight = dt.datetime(day.year, day.month, day.day, tzinfo=self._tz).timestamp()
            cached = (self._epoch(day, self._after), self._epoch(day, self._before), midnight)
            self._cache[day] = cached
        return cached

    def is_open(self, wall: float) -> bool:  # noqa: PLR0911 - window cases read best flat
        local = dt.datetime.fromtimestamp(wall, self._tz)
        if self._weekdays is not None and local.weekday() not in self._weekdays:
            return False
        if self._after is None and self._before is None:
            return True
        start, end, _ = self._bounds(local.date())
        if self._after is not None and start is None:
            return False
        if self._before is not None and end is None:
            return False
        if start is None:
            return wall < end if end is not None else True
        if end is None:
            return wall >= start
        if start <= end:
            return start <= wall < end
        return wall >= start or wall < end

    def next_change(self, wall: float) -> float:
        """The first instant after ``wall`` at which :meth:`is_open` may change."""
        today = dt.datetime.fromtimestamp(wall, self._tz).date()
        best: float | None = None
        for shift in (-1, 0, 1, 2):
            start, end, midnight = self._bounds(today + dt.timedelta(days=shift))
            for candidate in (start, end, midnight):
                if candidate is not None and candidate > wall and (best is None or candidate < best):
                    best = candidate
        return best if best is not None else wall + 86400.0
