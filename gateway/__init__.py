"""edgegw's gateway package: config, runtime supervisor, CLI, logging, the core types.

``gateway.model`` (Reading, Command, Event) and ``gateway.errors`` (the error tree) are
leaf modules that every other package may import.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from gateway.errors import ConfigError, ConfigIssue, GatewayError
from gateway.model import Command, Event, EventKind, Reading, Value

try:
    __version__ = version("edgegw")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"

__all__ = [
    "Command",
    "ConfigError",
    "ConfigIssue",
    "Event",
    "EventKind",
    "GatewayError",
    "Reading",
    "Value",
    "__version__",
]
