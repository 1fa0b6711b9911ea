"""``edgegw spool status --spool PATH``: depth, bytes, oldest age, priorities, dead letters."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "spool", help="inspect the store-and-forward spool", description="Inspect the on-disk spool."
    )
    sub = parser.add_subparsers(title="spool commands", metavar="SUBCOMMAND", required=True)
    status = sub.add_parser(
        "status",
        help="depth, bytes, oldest age, counts per priority, drops and dead letters",
        description="Read a spool file (read-only, safe while the gateway runs) and print what it holds.",
    )
    status.add_argument("--spool", type=Path, required=True, metavar="PATH", help="the spool file")
    status.add_argument("--json", action="store_true", help="print one JSON object")
    status.add_argument(
        "--dead-letters", type=int, default=20, metavar="N", help="list the last N (default 20)"
    )
    status.set_defaults(func=_status)


def _status(args: argparse.Namespace) -> int:
    from bridge.status import format_status, read_status  # noqa: PLC0415 - keep `edgegw --help` fast

    status = read_status(args.spool, dead_letter_limit=args.dead_letters)
    print(json.dumps(status.as_dict(), indent=2) if args.json else format_status(status))
    return 0
