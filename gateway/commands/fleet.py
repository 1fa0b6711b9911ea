"""``edgegw fleet serve|rebuild``: the fleet view (runs in the centre, not on a gateway).

Its code is the ``fleet`` package and its dependencies the ``fleet`` extra
(``pip install 'edgegw[fleet]'``), which a gateway's install does not pull: both are
imported only when a fleet command runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gateway.errors import GatewayError

INSTALL_HINT = "the fleet view needs its extra: pip install 'edgegw[fleet]'"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "fleet",
        help="the fleet view: a read model of every gateway and device, built from Kafka",
        description="Consume the gateways' Kafka topics into a queryable view (SQLite or PostgreSQL), "
        "with a web page and a JSON API. Needs `pip install 'edgegw[fleet]'`.",
    )
    sub = parser.add_subparsers(title="fleet commands", metavar="SUBCOMMAND", required=True)
    serve = sub.add_parser("serve", help="consume (in a consumer group) and serve the page and the API",
                           description="Member of the consumer group: keeps the view up to date, serves "
                           "the web page, the JSON API and /metrics.")  # fmt: skip
    rebuild = sub.add_parser("rebuild", help="replay the topics from the beginning into a fresh store",
                             description="The log is the source of truth: replay every partition from "
                             "offset 0 into an empty store (or --replace one), then exit.")  # fmt: skip
    for p in (serve, rebuild):
        p.add_argument("--config", type=Path, metavar="FILE", help="fleet config (YAML), docs/fleet-view.md")
        p.add_argument("--bootstrap", metavar="HOST:PORT", help="Kafka bootstrap servers (kafka.bootstrap)")
        p.add_argument("--store", metavar="URL", help="sqlite:///path/fleet.db or postgresql://... (store)")
    serve.add_argument("--listen", metavar="HOST:PORT", help="web page and API address, or 'none' (listen)")
    rebuild.add_argument("--replace", action="store_true", help="empty a store that is not empty first")
    serve.set_defaults(func=_serve)
    rebuild.set_defaults(func=_rebuild)


def _cli() -> object:
    try:
        from fleet import cli  # noqa: PLC0415 - the fleet extra is not installed on a gateway
    except ImportError as exc:
        raise GatewayError(f"{INSTALL_HINT} ({exc})") from exc
    return cli


def _serve(args: argparse.Namespace) -> int:
    code: int = _cli().serve(args)  # type: ignore[attr-defined]
    return code


def _rebuild(args: argparse.Namespace) -> int:
    code: int = _cli().rebuild(args)  # type: ignore[attr-defined]
    return code
