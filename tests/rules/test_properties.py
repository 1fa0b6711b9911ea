"""Invariants of the engine, checked with hypothesis on random signals."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.rules.helpers import Sim, one_rule, ruleset

THRESHOLD = 26.0
values = st.floats(min_value=-50, max_value=100, allow_nan=False, allow_infinity=False)
gaps = st.floats(min_value=0.1, max_value=600, allow_nan=False)
signals = st.lists(st.tuples(gaps, values), min_size=1, max_size=60)


def _timed(signal: list[tuple[float, float]]) -> list[tuple[float, float]]:
    t, out = 0.0, []
    for gap, value in signal:
        t += gap
        out.append((t, value))
    return out


@settings(max_examples=200, deadline=None)
@given(signals, st.floats(min_value=0, max_value=5))
def test_every_fire_follows_a_crossing(signal: list[tuple[float, float]], h: float) -> None:
    sim = Sim(ruleset(one_rule(f"{{sensor: s/v, above: {THRESHOLD}, hysteresis: {h}}}")))
    timed = _timed(signal)
    sim.feed(timed)
    fires = [t for t, text in sim.log() if text == "fired r"]
    for fire_at in fires:
        index = min(range(len(timed)), key=lambda i: abs(timed[i][0] - fire_at))
        assert timed[index][1] > THRESHOLD  # the reading that fired meets the condition
        before = [v for _, v in timed[:index]]
        # ...and was not met just before: the first reading, or after a clear (<= t - h)
        assert not before or min(before) <= THRESHOLD
    # fires and clears alternate, starting with a fire
    kinds = [text for _, text in sim.log()]
    assert all(kinds[i] == ("fired r" if i % 2 == 0 else "cleared r") for i in range(len(kinds)))


@settings(max_examples=200, deadline=None)
@given(signals, st.floats(min_value=0.1, max_value=10))
def test_signal_within_hysteresis_never_fires_and_clears(signal: list[tuple[float, float]], h: float) -> None:
    # The signal stays within h of the threshold: once fired, it can never clear.
    band = [(gap, THRESHOLD - h * 0.999 + (v % (2 * h * 0.999))) for gap, v in signal]
    sim = Sim(ruleset(one_rule(f"{{sensor: s/v, above: {THRESHOLD}, hysteresis: {h}}}")))
    sim.feed(_timed(band))
    kinds = [text for _, text in sim.log()]
    assert kinds in ([], ["fired r"])


@settings(max_examples=200, deadline=None)
@given(signals, st.integers(min_value=1, max_value=3600))
def test_cooldown_is_respected(signal: list[tuple[float, float]], cooldown: int) -> None:
    sim = Sim(ruleset(one_rule(f"{{sensor: s/v, above: {THRESHOLD}}}", f"cooldown: {cooldown}s")))
    sim.feed(_timed(signal))
    fires = [t for t, text in sim.log() if text == "fired r"]
    assert all(b - a >= cooldown for a, b in itertools.pairwise(fires))


@settings(max_examples=100, deadline=None)
@given(signals, st.integers(min_value=1, max_value=600))
def test_for_fires_only_after_the_condition_held_that_long(
    signal: list[tuple[float, float]], hold: int
) -> None:
    sim = Sim(ruleset(one_rule(f"{{sensor: s/v, above: {THRESHOLD}, for: {hold}s}}")))
    timed = _timed(signal)
    sim.feed(timed, until=timed[-1][0] + hold + 1)
    eps = 1e-5
    for fire_at in (t for t, text in sim.log() if text == "fired r"):
        started = [v for t, v in timed if t <= fire_at - hold + eps]
        assert started  # a reading at least `hold` before the fire...
        assert started[-1] > THRESHOLD  # ...met the condition,
        during = [v for t, v in timed if fire_at - hold + eps < t < fire_at - eps]
        assert all(v > THRESHOLD for v in during)  # and nothing broke it during the wait


def _reference(timed: list[tuple[float, float]], h: float, cooldown: float) -> list[tuple[float, str]]:
    """The semantics of design.md written the obvious way, for one `above` rule."""
    met = fired = False
    last_fire: float | None = None
    log = []
    for t, v in timed:
        now_met = v > (THRESHOLD - h if met else THRESHOLD)
        if now_met == met:
            continue
        met = now_met
        if met and (last_fire is None or t >= last_fire + cooldown):
            fired, last_fire = True, t
            log.append((t, "fired r"))
        elif not met and fired:
            fired = False
            log.append((t, "cleared r"))
    return log


@settings(max_examples=300, deadline=None)
@given(signals, st.floats(min_value=0, max_value=5), st.integers(min_value=0, max_value=900))
def test_engine_matches_the_reference_semantics(
    signal: list[tuple[float, float]], h: float, cooldown: int
) -> None:
    text = one_rule(
        f"{{sensor: s/v, above: {THRESHOLD}, hysteresis: {h}}}",
        f"cooldown: {cooldown}s\nmax_fires_per_minute: 1000",
    )
    sim = Sim(ruleset(text))
    timed = _timed(signal)
    sim.feed(timed)
    actual, expected = sim.log(), _reference(timed, h, cooldown)
    assert [text for _, text in actual] == [text for _, text in expected]
    assert all(abs(a - e) < 1e-5 for (a, _), (e, _) in zip(actual, expected, strict=True))
