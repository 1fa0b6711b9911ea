from __future__ import annotations

import pytest

from rules.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("2m", 120),
        ("1h", 3600),
        ("1h30m", 5400),
        ("2m30s", 150),
        ("1d", 86400),
        ("500ms", 0.5),
        ("1.5m", 90),
        ("0s", 0),
        (" 5s ", 5),
    ],
)
def test_parse(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "30", "2x", "m", "1m1h", "1h1h", "-5s", "1 m", "5sec"])
def test_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="bad duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0s"), (150, "2m30s"), (5400, "1h30m"), (0.25, "250ms"), (-60, "-1m")]
)
def test_format(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
