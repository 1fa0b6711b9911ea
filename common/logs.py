"""structlog set-up, done once by the CLI.

Readable coloured lines on a terminal; one JSON object per line under systemd
(``JOURNAL_STREAM`` is set) or when asked, so ``journalctl -o cat`` can be parsed.
Secrets never reach a log: config models hold them as ``pydantic.SecretStr`` and the
``redact_secrets`` processor masks any event key that looks like one, as a second line
of defence.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

__all__ = ["configure_logging", "redact_secrets"]

_SECRET_WORDS = ("password", "passwd", "secret", "token", "sasl.password", "ssl.key.password")


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Mask values whose key names a secret, wherever a caller bound one by mistake."""
    for key in event_dict:
        lowered = key.lower()
        if any(word in lowered for word in _SECRET_WORDS):
            event_dict[key] = "***"
    return event_dict


def configure_logging(*, level: str = "info", json: bool | None = None, file: TextIO | None = None) -> None:
    """Configure structlog for the process. ``json=None`` picks by environment; ``file``
    (default stderr) is where the lines go (the demo sends them to a file under its view)."""
    stream = file or sys.stderr
    if json is None:
        json = "JOURNAL_STREAM" in os.environ or not stream.isatty()
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact_secrets,
            structlog.processors.format_exc_info if json else structlog.processors.StackInfoRenderer(),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=True,
    )
