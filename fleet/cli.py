"""What ``edgegw fleet serve`` and ``edgegw fleet rebuild`` do (the parsers are in
``gateway/commands/fleet.py``, which imports this module only when a fleet command runs)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from typing import Any

import structlog

from common.logs import configure_logging
from fleet.config import FleetConfig, from_values, load_config
from fleet.consumer import FleetConsumer, Progress
from fleet.errors import FleetError
from fleet.projection import Projector
from fleet.schemas import SCHEMA_DIR, Validators
from fleet.store import open_store
from fleet.web import FleetWeb, web_access

__all__ = ["config_from_args", "rebuild", "serve"]

_log = structlog.get_logger("edgegw.fleet")


def config_from_args(args: argparse.Namespace) -> FleetConfig:
    overrides: dict[str, Any] = {
        "kafka.bootstrap": args.bootstrap, "store": args.store, "listen": getattr(args, "listen", None),
    }  # fmt: skip
    if args.config is not None:
        return load_config(args.config, **overrides)
    if args.bootstrap is None:
        raise FleetError("give --config FILE or at least --bootstrap HOST:PORT")
    return from_values(**overrides)


def _parts(config: FleetConfig) -> tuple[Any, FleetConsumer]:
    store = open_store(config.store)
    validators = Validators.from_folder(config.schemas or SCHEMA_DIR)
    projector = Projector(validators, offline_after=config.offline_after)
    return store, FleetConsumer(config, store, projector)


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def handler(signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def serve(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    configure_logging(level="info")
    store, consumer = _parts(config)
    web = None
    if config.listen.lower() != "none":
        host, _, port = config.listen.rpartition(":")
        access = web_access(config)
        web = FleetWeb(host or "127.0.0.1", int(port), store.reader, consumer.stats, access=access).start()
        print(f"fleet view on {web.url} (store {store.url})", file=sys.stderr, flush=True)
    stop = _stop_on_signals()
    try:
        consumer.serve(stop)
    finally:
        if web is not None:
            web.stop()
        store.close()
    return 0


def _progress_line(p: Progress) -> None:
    rate = p.events / p.elapsed if p.elapsed > 0 else 0.0
    share = f" of ~{p.total:,}" if p.total else ""
    end = "\r" if sys.stderr.isatty() else "\n"
    print(f"rebuild: {p.events:,}{share} events, {rate:,.0f}/s, "
          f"{p.partitions_done}/{p.partitions} partitions at their end", end=end, file=sys.stderr, flush=True)


def rebuild(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    configure_logging(level="warning")
    store, consumer = _parts(config)
    try:
        if not store.is_empty():
            if not args.replace:
                raise FleetError(f"{store.url} is not empty: rebuild into a fresh store, or give --replace")
            store.reset()
        started = time.monotonic()
        stats = consumer.rebuild(_progress_line, stop=_stop_on_signals())
        took = time.monotonic() - started
        if sys.stderr.isatty():
            print(file=sys.stderr)
        print(f"rebuilt {stats.events:,} events ({stats.dead_letters:,} dead letters, {stats.duplicates:,} "
              f"duplicates) in {took:.1f} s into {store.url}")  # fmt: skip
    finally:
        store.close()
    return 0
