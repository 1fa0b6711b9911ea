"""Sans-IO line framing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.framing import Frame, LineFramer


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [
        ([b"a=1\n"], [Frame(b"a=1")]),
        ([b"a=", b"1\r\n", b"b=2\n"], [Frame(b"a=1"), Frame(b"b=2")]),
        ([b"\n\n  \nx\n"], [Frame(b"x")]),
        ([b"no newline yet"], []),
        ([b"x" * 20 + b"\nok\n"], [Frame(b"", "line_too_long"), Frame(b"ok")]),
        ([b"x" * 10, b"x" * 10, b"x" * 10, b"\nok\n"], [Frame(b"", "line_too_long"), Frame(b"ok")]),
        ([b"x" * 16 + b"\r\n"], [Frame(b"x" * 16)]),
    ],
)
def test_framing(chunks: list[bytes], expected: list[Frame]) -> None:
    framer = LineFramer(max_line=16)
    frames = [f for chunk in chunks for f in framer.feed(chunk)]
    assert frames == expected


def test_overlong_line_is_not_buffered_without_bound() -> None:
    framer = LineFramer(max_line=16)
    frames = []
    for _ in range(1000):
        frames += framer.feed(b"y" * 100)
        assert framer.pending <= 17
    frames += framer.feed(b"\nz\n")
    assert frames == [Frame(b"", "line_too_long"), Frame(b"z")]


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=400), cuts=st.lists(st.integers(0, 400), max_size=10))
def test_any_bytes_any_split(data: bytes, cuts: list[int]) -> None:
    """No exception for any input; the split of the stream does not change the frames."""
    whole = LineFramer(max_line=32).feed(data)
    framer = LineFramer(max_line=32)
    pieces, last = [], 0
    for cut in sorted(c for c in cuts if c <= len(data)):
        pieces.append(data[last:cut])
        last = cut
    pieces.append(data[last:])
    split = [f for p in pieces for f in framer.feed(p)]
    assert split == whole
    assert all(len(f.data) <= 32 and b"\n" not in f.data for f in split)


@settings(max_examples=200, deadline=None)
@given(
    lines=st.lists(
        st.binary(min_size=1, max_size=30).filter(
            lambda b: b"\n" not in b and b.strip() and not b.endswith(b"\r")
        ),
        max_size=20,
    )
)
def test_lines_round_trip(lines: list[bytes]) -> None:
    framer = LineFramer(max_line=32)
    assert framer.feed(b"".join(line + b"\n" for line in lines)) == [Frame(line) for line in lines]
