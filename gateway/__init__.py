"""edgegw's gateway package: config, runtime supervisor, CLI, logging, the core types.

``gateway.model`` (Reading, Command, Event) and ``gateway.errors`` (the error tree) are
leaf modules that every other package may import.
"""

from __future__ import annotations

import sys
from pathlib import Path

from gateway.errors import ConfigError, ConfigIssue, GatewayError
from gateway.model import Command, Event, EventKind, Reading, Value


def _installed_version() -> str:
    """edgegw's version from its ``*.dist-info/METADATA``, as ``importlib.metadata`` finds it.

    Read directly: ``importlib.metadata`` costs every process ~1 MiB resident and 16
    modules (zipfile, csv, its email parsing) for one line. A layout this does not know
    (an egg, a zip) falls back to ``importlib.metadata``.
    """
    for entry in sys.path:
        try:
            infos = sorted(Path(entry or ".").glob("edgegw-*.dist-info"))
        except OSError:
            continue
        for info in infos:
            try:
                with (info / "METADATA").open(encoding="utf-8") as meta:
                    for line in meta:
                        if line.startswith("Version:"):
                            return line.partition(":")[2].strip()
                        if not line.strip():
                            break  # the end of the headers
            except OSError:
                continue
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    try:
        return version("edgegw")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
        return "0.0.0+unknown"


__version__ = _installed_version()

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
