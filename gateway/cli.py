"""The ``edgegw`` command line: a thin dispatcher over :mod:`gateway.commands`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import TextIO, cast

from gateway import __version__
from gateway.commands import register_all, register_for
from gateway.errors import ConfigError, GatewayError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INVALID = 2  # bad config/rules/scenario file, bad usage (argparse uses 2 too)

DESCRIPTION = """\
edgegw: an IoT and smart-home edge gateway.

Reads sensors over MQTT and serial ports, runs YAML rules locally to drive lights,
thermostats and relays with no cloud round trip, and ships readings and events to
Apache Kafka through an on-disk spool that loses nothing while the uplink is down.
"""


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser of every command; with ``argv``, of its command only (see
    :func:`gateway.commands.register_for`: ``edgegw run`` imports no other command)."""
    parser = argparse.ArgumentParser(
        prog="edgegw",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run `edgegw COMMAND --help` for the options of one command.",
    )
    parser.add_argument("--version", action="version", version=f"edgegw {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    if argv is None:
        register_all(subparsers)
    else:
        register_for(subparsers, argv)
    return parser


class _Stderr:
    """Whatever ``sys.stderr`` is at the time of each write (tests swap it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


# Optional packages structlog imports when they are installed, which `edgegw run` never
# uses: rich (with pygments and attrs, for ConsoleRenderer's rich tracebacks; 79 modules,
# ~4 MiB resident) and greenlet (for the deprecated structlog.threadlocal; ~1 MiB with its
# C extension; installed here by playwright, a test dependency).
_STRUCTLOG_OPTIONAL = ("rich", "greenlet")


def _import_structlog() -> ModuleType:
    """structlog, imported without rich and greenlet when this process has loaded none of them.

    `edgegw run` renders tracebacks with structlog's plain formatter (JSON under systemd)
    and runs no greenlets. rich is installed for `edgegw demo`'s live view; the demo imports
    it itself, which works again as soon as structlog is loaded.
    """
    if "structlog" not in sys.modules:
        blocked = [name for name in _STRUCTLOG_OPTIONAL if name not in sys.modules]
        # None in sys.modules makes `import rich` raise ImportError, which structlog handles
        for name in blocked:
            sys.modules[name] = None  # type: ignore[assignment]
        try:
            import structlog  # noqa: PLC0415
        finally:
            for name in blocked:
                del sys.modules[name]
    import structlog  # noqa: PLC0415

    return structlog


def main(argv: Sequence[str] | None = None) -> int:
    structlog = _import_structlog()
    # Logs go to stderr from the start, so a command's output on stdout (`--json`,
    # `--print-config`) stays parseable; `run` and `demo` configure logging fully later.
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=cast("TextIO", _Stderr())))
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return EXIT_OK
    try:
        code: int = func(args)
    except ConfigError as exc:
        for issue in exc.issues:
            print(f"error: {issue}", file=sys.stderr)
        return EXIT_INVALID
    except GatewayError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
