"""Sans-IO line framing for serial devices: ``feed(bytes) -> list[Frame]``.

Bytes in, complete lines out; no port, no clock. Lines end with ``\\n`` (a ``\\r``
before it is dropped). A line longer than ``max_line`` bytes is not buffered without
bound: the framer drops bytes up to the next newline and reports one ``Frame`` with
``error="line_too_long"`` for it, so the source can count it. Blank lines are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Frame", "LineFramer"]


@dataclass(frozen=True, slots=True)
class Frame:
    """One line without its line ending, or an error in place of one."""

    data: bytes
    error: str | None = None


class LineFramer:
    """Splits a byte stream into lines of at most ``max_line`` bytes."""

    __slots__ = ("_buf", "_discarding", "max_line")

    def __init__(self, max_line: int = 4096) -> None:
        if max_line < 1:
            raise ValueError("max_line must be positive")
        self.max_line = max_line
        self._buf = bytearray()
        self._discarding = False

    def feed(self, data: bytes) -> list[Frame]:
        frames: list[Frame] = []
        buf = self._buf
        buf += data
        start = 0
        while True:
            end = buf.find(b"\n", start)
            if end < 0:
                break
            if self._discarding:
                self._discarding = False
            else:
                line = bytes(buf[start:end])
                if line.endswith(b"\r"):
                    line = line[:-1]
                if len(line) > self.max_line:
                    frames.append(Frame(b"", "line_too_long"))
                elif line.strip():
                    frames.append(Frame(line))
            start = end + 1
        del buf[:start]
        if len(buf) > self.max_line + 1:  # +1: a trailing \r still fits
            if not self._discarding:
                frames.append(Frame(b"", "line_too_long"))
                self._discarding = True
            buf.clear()
        return frames

    def reset(self) -> None:
        """Forget a partial line (after the port was reopened)."""
        self._buf.clear()
        self._discarding = False

    @property
    def pending(self) -> int:
        """Bytes of an incomplete line held back."""
        return len(self._buf)
