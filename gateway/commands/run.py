"""``edgegw run``: the gateway itself (what systemd starts) and ``edgegw check``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from common.libc import limit_malloc_arenas, release_free_memory
from gateway.config import DEFAULT_CONFIG_PATH

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2


def _config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        "-c",
        type=Path,
        default=Path(os.environ.get("EDGEGW_CONFIG", str(DEFAULT_CONFIG_PATH))),
        metavar="FILE",
        help=f"the config file (default: $EDGEGW_CONFIG or {DEFAULT_CONFIG_PATH})",
    )


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = subparsers.add_parser(
        "run",
        help="run the gateway (what the systemd unit starts)",
        description="Run the gateway: sources, rules, actuators, spool and Kafka uplink. "
        "SIGTERM stops it gracefully, SIGHUP reloads rules and devices.",
    )
    _config_arg(run)
    run.add_argument("--log-level", choices=("debug", "info", "warning", "error"), help="overrides log.level")
    run.add_argument("--log-format", choices=("auto", "json", "console"), help="overrides log.format")
    run.set_defaults(func=_run)
    check = subparsers.add_parser(
        "check",
        help="validate the config as a start would, without connecting",
        description="Validate the config file, its rules, secrets, state directory and local "
        "Mosquitto settings, without connecting to anything. Exit 0 valid, 2 invalid.",
    )
    _config_arg(check)
    check.set_defaults(func=_check)


def _run(args: argparse.Namespace) -> int:
    limit_malloc_arenas()  # first: before any thread allocates
    import asyncio  # noqa: PLC0415 - keep `edgegw --help` fast

    from gateway.config import load_config_at_start  # noqa: PLC0415

    loaded = load_config_at_start(args.config)  # parsed in a child: see its docstring
    # after the config: a bad config exits before these modules (the runtime, its MQTT,
    # HTTP and Kafka parts) are imported
    from common.logs import configure_logging  # noqa: PLC0415
    from gateway.identity import resolve_gateway_id  # noqa: PLC0415
    from gateway.runtime import Runtime  # noqa: PLC0415
    from gateway.sdnotify import Notifier  # noqa: PLC0415

    log = loaded.config.log
    fmt = args.log_format or log.format
    configure_logging(level=args.log_level or log.level, json=None if fmt == "auto" else fmt == "json")
    state_dir = loaded.config.gateway.resolved_state_dir()
    state_dir.mkdir(parents=True, exist_ok=True)
    gateway_id = resolve_gateway_id(loaded.config.gateway.id, state_dir)
    with Notifier() as notifier:
        runtime = Runtime(loaded, gateway_id=gateway_id, notifier=notifier,
                          on_ready=release_free_memory, on_drained=release_free_memory)  # fmt: skip
        asyncio.run(runtime.run())
    return EXIT_OK


def _check(args: argparse.Namespace) -> int:
    from gateway.checks import check_config  # noqa: PLC0415

    report = check_config(args.config)
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for line in report.summary:
        print(line)
    return EXIT_OK
