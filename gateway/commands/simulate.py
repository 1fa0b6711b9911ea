"""``edgegw simulate FLEET.yaml --broker HOST:PORT --rate R --duration S``.

Runs a simulated sensor fleet (see simulators/fleet.py and simulators/fleets/): MQTT
devices publish through one or more publisher processes, serial devices write to ptys
behind stable symlinks. Prints a progress line while it runs and a summary of what it
sent at the end. ``--print-config`` prints the ``devices:`` section an edgegw config
needs to read the fleet, and exits.

Exit codes: 0 done, 1 the broker could not be reached or refused us, 2 invalid fleet
file or options.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from gateway.commands.options import add_mqtt_login, host_port, password_from
from gateway.errors import ConfigError, ConfigIssue

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "simulate",
        help="run a simulated sensor fleet against an MQTT broker",
        description="Run a simulated sensor fleet (MQTT devices in several payload profiles, "
        "serial devices on ptys) and print a summary of what it sent.",
    )
    parser.add_argument("fleet", metavar="FLEET.yaml", help="fleet spec (see simulators/fleets/)")
    parser.add_argument("--broker", metavar="HOST:PORT", help="MQTT broker (needed for MQTT devices)")
    parser.add_argument("--rate", type=float, help="total readings per second (default: the fleet's)")
    parser.add_argument("--duration", type=float, default=60.0, metavar="S", help="seconds to run (60)")
    parser.add_argument("--count", type=int, metavar="N", help="stop after N messages")
    parser.add_argument("--processes", type=int, default=1, metavar="N",
                        help="publisher processes (one manages ~7-10k QoS 1 msg/s)")
    parser.add_argument("--qos", type=int, choices=(0, 1), default=1)
    parser.add_argument("--protocol", choices=("3.1.1", "5"), default="3.1.1")
    parser.add_argument("--seed", type=int, help="override the fleet's seed")
    add_mqtt_login(parser)
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    parser.add_argument("--print-config", action="store_true",
                        help="print the edgegw `devices:` section for this fleet and exit")
    parser.set_defaults(func=_simulate)


def _load(path: str, seed: int | None) -> Any:
    """The fleet spec; a ConfigError located at file:line:column when it is invalid."""
    from gateway.yamlio import load_model  # noqa: PLC0415
    from simulators.fleet import FleetSpec  # noqa: PLC0415

    spec = load_model(path, FleetSpec)
    if seed is not None:
        spec = spec.model_copy(update={"seed": seed})
    return spec


def _simulate(args: argparse.Namespace) -> int:
    from simulators.generator import FleetStats  # noqa: PLC0415
    from simulators.mqtt_publisher import BrokerTarget  # noqa: PLC0415
    from simulators.run import run_fleet  # noqa: PLC0415

    spec = _load(args.fleet, args.seed)
    if args.print_config:
        from ruamel.yaml import YAML  # noqa: PLC0415

        yaml = YAML()
        yaml.default_flow_style = False
        try:
            yaml.dump({"devices": spec.gateway_devices()}, sys.stdout)
            sys.stdout.flush()
        except BrokenPipeError:  # `| head`: the reader had enough
            sys.stderr.close()  # nothing more to say, and no traceback at exit
        return EXIT_OK
    devices = spec.devices()
    n_mqtt = sum(1 for d in devices if not d.is_serial)
    if args.processes < 1 or (args.rate is not None and args.rate <= 0) or args.duration <= 0:
        raise ConfigError(ConfigIssue("--processes, --rate and --duration must be positive"))
    target = None
    if n_mqtt:
        if not args.broker:
            raise ConfigError(ConfigIssue("this fleet has MQTT devices: give --broker HOST:PORT"))
        host, port = host_port(args.broker)
        target = BrokerTarget(host, port, protocol=args.protocol, username=args.username,
                              password=password_from(args), ca_file=args.ca_file, qos=args.qos)
    rate = args.rate or spec.rate
    tty = sys.stderr.isatty()

    def progress(stats: FleetStats) -> None:
        if args.quiet:
            return
        line = (f"{stats.elapsed:6.1f} s  sent {stats.messages:,} msgs  {stats.readings:,} readings  "
                f"acked {stats.acked:,}")
        print(f"\r{line}" if tty else line, end="" if tty else "\n", file=sys.stderr, flush=True)

    if not args.quiet:
        print(f"simulating {len(devices)} devices ({n_mqtt} MQTT, {len(devices) - n_mqtt} serial) from "
              f"{args.fleet}: {rate:g} readings/s for {args.duration:g} s, seed {spec.seed}",
              file=sys.stderr)
    try:
        stats = run_fleet(spec, target, rate=rate, duration=args.duration, processes=args.processes,
                          max_messages=args.count, progress=progress)
    except ConnectionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if tty and not args.quiet:
        print(file=sys.stderr)
    _summary(stats, args, len(devices), os.path.basename(args.fleet))
    return EXIT_OK


def _summary(stats: Any, args: argparse.Namespace, n_devices: int, name: str) -> None:
    if args.json:
        print(json.dumps({"fleet": name, "devices": n_devices, **stats.to_dict()}, sort_keys=True))
        return
    rate = stats.readings / stats.elapsed if stats.elapsed else 0.0
    print(f"fleet {name}: {n_devices} devices")
    print(f"sent {stats.messages:,} messages with {stats.readings:,} readings in {stats.elapsed:.1f} s "
          f"({rate:,.0f} readings/s, {stats.bytes / 1024:,.1f} KiB)")
    if args.qos and args.broker:
        print(f"acknowledged by the broker: {stats.acked:,}")
    print("by profile: " + ", ".join(f"{k} {v:,}" for k, v in sorted(stats.by_profile.items())))
    print("readings by kind: " + ", ".join(f"{k} {v:,}" for k, v in sorted(stats.by_kind.items())))
    print(f"faults: {stats.garbage:,} garbage, {stats.spikes:,} spikes, {stats.dropped:,} samples dropped, "
          f"{stats.disconnects:,} disconnects")
    if stats.queue_full_waits:
        print(f"publisher queue full: waited {stats.queue_full_waits:,} times (back-pressure)")
