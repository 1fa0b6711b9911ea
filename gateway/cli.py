"""The ``edgegw`` command line: a thin dispatcher over :mod:`gateway.commands`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import TextIO, cast

from gateway import __version__
from gateway.commands import register_all
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgegw",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run `edgegw COMMAND --help` for the options of one command.",
    )
    parser.add_argument("--version", action="version", version=f"edgegw {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    register_all(subparsers)
    return parser


class _Stderr:
    """Whatever ``sys.stderr`` is at the time of each write (tests swap it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def _import_structlog() -> ModuleType:
    """structlog, imported without rich when this process has not loaded either yet.

    structlog imports rich as soon as it is installed (for the rich tracebacks of its
    ConsoleRenderer), and with it pygments and attrs: 79 modules and about 4 MiB of
    resident memory in every `edgegw run`, which renders tracebacks with structlog's plain
    formatter anyway (JSON under systemd). rich is installed for `edgegw demo`'s live view;
    the demo imports it itself, which works again as soon as structlog is loaded.
    """
    if "structlog" not in sys.modules and "rich" not in sys.modules:
        # None in sys.modules makes `import rich` raise ImportError, which structlog handles
        sys.modules["rich"] = None  # type: ignore[assignment]
        try:
            import structlog  # noqa: PLC0415
        finally:
            del sys.modules["rich"]
    import structlog  # noqa: PLC0415

    return structlog


def main(argv: Sequence[str] | None = None) -> int:
    structlog = _import_structlog()
    # Logs go to stderr from the start, so a command's output on stdout (`--json`,
    # `--print-config`) stays parseable; `run` and `demo` configure logging fully later.
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=cast("TextIO", _Stderr())))
    parser = build_parser()
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
