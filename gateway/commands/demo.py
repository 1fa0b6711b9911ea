"""``edgegw demo``: a simulated home run by the real gateway (see gateway/demo.py)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run a simulated home through the gateway, in a live terminal view",
        description="Run a simulated home (20 sensors, lights, a fan, a thermostat, six rules) "
        "through the real gateway: MQTT broker, rules, actuators, spool and, when given, the "
        "Kafka uplink. Needs no external service. Ctrl-C stops it.",
    )
    parser.add_argument(
        "--duration", type=float, metavar="S", help="stop after S seconds and print a summary"
    )
    parser.add_argument(
        "--kafka",
        metavar="HOST:PORT",
        default=os.environ.get("EDGEGW_KAFKA") or None,
        help="ship to this Kafka (default: $EDGEGW_KAFKA; none: the spool keeps everything)",
    )
    parser.add_argument(
        "--local-kafka", action="store_true", help="start a local Kafka from the test bed (needs Java 17)"
    )
    parser.add_argument("--rate", type=float, metavar="R", help="simulated readings per second (default 40)")
    parser.add_argument(
        "--workdir", type=Path, metavar="DIR", help="where state and logs go (default: a temp dir)"
    )
    parser.add_argument(
        "--fleet",
        action="store_true",
        help="three simulated gateways shipping to Kafka and the fleet view on a local port "
        "(needs Kafka: --kafka or --local-kafka, and pip install 'edgegw[fleet]')",
    )
    parser.add_argument(
        "--fleet-listen", default="127.0.0.1:8300", metavar="HOST:PORT", help="the fleet view's address"
    )
    parser.add_argument(
        "--no-view",
        dest="view",
        action="store_false",
        default=None,
        help="status lines instead of the live view",
    )
    parser.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    from gateway.demo import DemoOptions, run_demo  # noqa: PLC0415 - rich and the simulators load only here

    options = DemoOptions(
        duration=args.duration,
        kafka=args.kafka,
        local_kafka=args.local_kafka,
        rate=args.rate,
        workdir=args.workdir,
        view=args.view,
    )
    if args.fleet:
        from gateway.demo_fleet import run_fleet_demo  # noqa: PLC0415

        return run_fleet_demo(options, listen=args.fleet_listen)
    return run_demo(options)
