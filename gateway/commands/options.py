"""Command-line options that several commands share: a broker address and the MQTT login.

``edgegw simulate`` and ``edgegw discover`` take the same ``--broker HOST:PORT``,
``--username``, ``--password-file``/``--password-env`` (a password never on the command
line, where ``ps`` shows it) and ``--ca-file``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gateway.errors import ConfigError, ConfigIssue

__all__ = ["add_mqtt_login", "host_port", "password_from"]


def add_mqtt_login(parser: argparse.ArgumentParser) -> None:
    """``--username``, ``--password-file``, ``--password-env`` and ``--ca-file``."""
    parser.add_argument("--username")
    parser.add_argument("--password-file", metavar="PATH", help="read the MQTT password from a file")
    parser.add_argument("--password-env", metavar="VAR", help="read the MQTT password from $VAR")
    parser.add_argument("--ca-file", metavar="PEM", help="use TLS, trusting this CA")


def host_port(text: str, option: str = "--broker") -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too); a :class:`ConfigError` naming ``option`` otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(ConfigIssue(f"{option} wants HOST:PORT, got {text!r}"))
    return host.strip("[]"), int(port)


def password_from(args: argparse.Namespace) -> str | None:
    """The password ``--password-file`` or ``--password-env`` names, or None."""
    from gateway.secrets import SecretRef, resolve_secret  # noqa: PLC0415

    if args.password_file:
        ref = SecretRef(file=Path(args.password_file))
        return resolve_secret(ref, what="--password-file").get_secret_value()
    if args.password_env:
        return resolve_secret(SecretRef(env=args.password_env), what="--password-env").get_secret_value()
    return None
