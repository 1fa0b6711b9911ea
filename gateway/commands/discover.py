"""``edgegw discover --broker HOST:PORT [--write FILE | --merge FILE]``.

Listens a bounded time (``--listen``, 5s; Ctrl-C stops early) to the retained
announcements of Zigbee2MQTT (``<base>/bridge/devices``), Tasmota
(``tasmota/discovery/<mac>/config`` and ``.../sensors``) and the Home Assistant discovery
configs of other devices (``homeassistant/+/+/config``, ``homeassistant/+/+/+/config``),
and prints a config with the
devices and actuators found (see :mod:`devices.discovery`). ``--write FILE`` writes it
(an existing file only with ``--force``); ``--merge FILE`` adds what is new to a config.

Exit codes: 0 done, 1 the broker could not be reached or nothing was found, 2 bad
options, or a file that would be overwritten.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.commands.options import add_mqtt_login, host_port, password_from
from gateway.errors import ConfigError, ConfigIssue, GatewayError

if TYPE_CHECKING:
    from devices.discovery import Announcements

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "discover",
        help="write a config for the Zigbee2MQTT, Tasmota and Home Assistant devices on a broker",
        description="Listen to the retained announcements of Zigbee2MQTT and Tasmota (and the Home "
        "Assistant discovery configs of other devices) on an MQTT broker and print (or write) a "
        "config with one device per sensor and one actuator per thing that can be switched or set."
        " Comments mark what was guessed.",
    )
    parser.add_argument("--broker", metavar="HOST:PORT", default="127.0.0.1:1883",
                        help="MQTT broker (127.0.0.1:1883)")  # fmt: skip
    parser.add_argument("--listen", default="5s", metavar="DURATION",
                        help="how long to listen for announcements (5s); Ctrl-C stops early")  # fmt: skip
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--write", type=Path, metavar="FILE", help="write the config to FILE")
    out.add_argument("--merge", type=Path, metavar="FILE",
                     help="add what is new to the config FILE, leave the rest alone")  # fmt: skip
    parser.add_argument("--force", action="store_true", help="let --write overwrite an existing file")
    parser.add_argument("--zigbee2mqtt-base", action="append", metavar="TOPIC",
                        help="Zigbee2MQTT base topic (repeatable; default: any one-level base, "
                        "i.e. +/bridge/devices)")  # fmt: skip
    parser.add_argument("--tasmota-prefix", default="tasmota/discovery", metavar="TOPIC",
                        help="Tasmota discovery prefix (tasmota/discovery)")  # fmt: skip
    parser.add_argument("--homeassistant-prefix", default="homeassistant", metavar="TOPIC",
                        help="Home Assistant discovery prefix (homeassistant); its sensor, binary_sensor, "
                        "switch and light configs are read for the other devices")  # fmt: skip
    add_mqtt_login(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    parser.set_defaults(func=_discover)


def _discover(args: argparse.Namespace) -> int:
    from devices.config import parse_duration  # noqa: PLC0415
    from devices.discovery import Announcements  # noqa: PLC0415
    from gateway.discovered import merge_config, render_config  # noqa: PLC0415

    host, port = host_port(args.broker)
    try:
        listen = parse_duration(args.listen)
    except ValueError as exc:
        raise ConfigError(ConfigIssue(f"--listen: {exc}")) from None
    if args.write is not None and args.write.exists() and not args.force:
        raise ConfigError(ConfigIssue(f"{args.write} exists: add --force to overwrite it, "
                                      f"or --merge {args.write} to add what is new"))  # fmt: skip
    existing = None
    if args.merge is not None:
        try:
            existing = args.merge.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(ConfigIssue(f"cannot read {args.merge}: {exc.strerror}")) from None
    bases = args.zigbee2mqtt_base or ["+"]
    topics = [f"{b.rstrip('/')}/bridge/devices" for b in bases]
    prefix = args.tasmota_prefix.rstrip("/")
    topics += [f"{prefix}/+/config", f"{prefix}/+/sensors"]
    ha = args.homeassistant_prefix.rstrip("/")
    topics += [f"{ha}/+/+/config", f"{ha}/+/+/+/config"]
    found = Announcements(tasmota_prefix=prefix, homeassistant_prefix=ha)
    _listen(found, topics, host=host, port=port, seconds=listen, args=args)
    result = found.result()
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    if not result.devices and not result.actuators:
        print(f"error: no Zigbee2MQTT, Tasmota or Home Assistant announcements on {host}:{port} "
              f"(listened to {', '.join(topics)})", file=sys.stderr)  # fmt: skip
        return EXIT_FAILED
    summary = f"found {len(result.devices)} devices and {len(result.actuators)} actuators"
    if existing is not None:
        merged = merge_config(existing, result, file=str(args.merge))
        if merged.added:
            args.merge.write_text(merged.text, encoding="utf-8")
        added = ", ".join(merged.added) or "nothing new"
        print(f"{summary}; added to {args.merge}: {added}", file=sys.stderr)
        if merged.kept:
            print(f"already there, left alone: {', '.join(merged.kept)}", file=sys.stderr)
        return EXIT_OK
    text = render_config(result, host=host, port=port)
    if args.write is None:
        sys.stdout.write(text)
        print(summary, file=sys.stderr)
        return EXIT_OK
    args.write.write_text(text, encoding="utf-8")
    print(f"{summary}; wrote {args.write} (check it: edgegw check --config {args.write})", file=sys.stderr)
    return EXIT_OK


def _listen(found: Announcements, topics: list[str], *, host: str, port: int, seconds: float,
            args: argparse.Namespace) -> None:  # fmt: skip
    """Collect retained messages on ``topics`` for ``seconds`` (Ctrl-C: stop now)."""
    import paho.mqtt.client as mqtt  # noqa: PLC0415
    from paho.mqtt.enums import CallbackAPIVersion  # noqa: PLC0415

    lock = threading.Lock()
    connected = threading.Event()
    refused: list[str] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"edgegw-discover-{uuid.uuid4().hex[:6]}")
    if args.username:
        client.username_pw_set(args.username, password_from(args))
    if args.ca_file:
        client.tls_set(ca_certs=args.ca_file)

    def on_connect(c: mqtt.Client, _u: object, _f: object, reason: object, _p: object = None) -> None:
        if getattr(reason, "is_failure", False):
            refused.append(str(reason))
        else:
            c.subscribe([(t, 0) for t in topics])
        connected.set()

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        with lock:
            found.add(msg.topic, bytes(msg.payload))

    client.on_connect = on_connect
    client.on_message = on_message
    try:
        client.connect(host, port)
    except OSError as exc:
        raise GatewayError(f"cannot reach the broker at {host}:{port}: {exc}") from exc
    client.loop_start()
    tty = sys.stderr.isatty() and not args.quiet
    try:
        if not connected.wait(10.0):
            raise GatewayError(f"no answer from the broker at {host}:{port}")
        if refused:
            raise GatewayError(f"the broker at {host}:{port} refused us: {refused[0]}")
        if not tty and not args.quiet:  # a log, not a terminal: one line, not a redrawn one
            print(f"listening on {host}:{port} for {seconds:g}s", file=sys.stderr, flush=True)
        _wait(found, lock, f"{host}:{port}", seconds, progress=tty)
    finally:
        client.loop_stop()
        client.disconnect()


def _wait(found: Announcements, lock: threading.Lock, broker: str, seconds: float, *, progress: bool) -> None:
    """Sleep ``seconds`` (Ctrl-C ends it early), with a progress line on a terminal."""
    end = time.monotonic() + seconds
    try:
        while (left := end - time.monotonic()) > 0:
            if progress:
                with lock:
                    z2m, tasmota, ha = found.counts()
                line = (f"listening on {broker}: {z2m} Zigbee2MQTT and {tasmota} Tasmota devices, {ha} Home "
                        f"Assistant configs so far, {left:.0f}s left (Ctrl-C to stop now)")  # fmt: skip
                print(f"\r{line}\033[K", end="", file=sys.stderr, flush=True)
            time.sleep(min(0.25, left))
    except KeyboardInterrupt:
        pass
    if progress:
        print(file=sys.stderr)
