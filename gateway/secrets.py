"""Resolve secrets (MQTT and Kafka passwords) from where the config says they live.

A secret is never written in the YAML. The config names its source, exactly one of::

    password: {file: /etc/edgegw/mqtt.pass}     # a file (first line, without the newline)
    password: {env: EDGEGW_MQTT_PASSWORD}       # an environment variable
    password: {credential: mqtt-password}       # systemd LoadCredential=, in $CREDENTIALS_DIRECTORY

:func:`resolve_secret` returns a :class:`pydantic.SecretStr`, whose ``repr`` and ``str``
are masked, and it never logs the value: only the kind of source and its name. Errors
name where the secret was looked for, never what was found.

Any object with ``file``, ``env`` and ``credential`` attributes will do as a reference
(:class:`devices.config.PasswordRef` is one), so packages that may not import ``gateway``
can declare their own.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import structlog
from pydantic import SecretStr

from common.configtypes import SecretRef
from gateway.errors import ConfigError

__all__ = ["SecretRef", "SecretSource", "resolve_secret"]

_log = structlog.get_logger("edgegw.secrets")

MAX_SECRET_FILE = 64 * 1024


class SecretSource(Protocol):
    @property
    def file(self) -> Path | None: ...
    @property
    def env(self) -> str | None: ...
    @property
    def credential(self) -> str | None: ...


def resolve_secret(
    ref: SecretSource,
    *,
    environ: Mapping[str, str] | None = None,
    what: str = "secret",
) -> SecretStr:
    """Read the secret ``ref`` points at. Raises :class:`ConfigError` naming the source."""
    env = os.environ if environ is None else environ
    if ref.env is not None:
        value = env.get(ref.env)
        if value is None:
            raise ConfigError(f"{what}: environment variable {ref.env} is not set")
        _log.debug("secret resolved", what=what, source="env", name=ref.env)
        return SecretStr(value)
    if ref.credential is not None:
        name = ref.credential
        if not name or "/" in name or name in (".", ".."):
            raise ConfigError(f"{what}: invalid credential name {name!r}")
        directory = env.get("CREDENTIALS_DIRECTORY")
        if not directory:
            raise ConfigError(
                f"{what}: credential {name!r} needs $CREDENTIALS_DIRECTORY "
                "(systemd LoadCredential=/SetCredential= in the unit)"
            )
        path = Path(directory) / name
        value = _read(path, what)
        _log.debug("secret resolved", what=what, source="credential", name=name)
        return SecretStr(value)
    if ref.file is not None:
        value = _read(Path(ref.file), what)
        _log.debug("secret resolved", what=what, source="file", path=str(ref.file))
        return SecretStr(value)
    raise ConfigError(f"{what}: give exactly one of file, env or credential")


def _read(path: Path, what: str) -> str:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_SECRET_FILE + 1)
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_SECRET_FILE:
        raise ConfigError(f"{what}: {path} is larger than {MAX_SECRET_FILE} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{what}: {path} is not UTF-8 text") from None
    # the first line, so `echo secret > file` and files without a newline both work
    line = text.split("\n", 1)[0].rstrip("\r")
    if not line:
        raise ConfigError(f"{what}: {path} is empty")
    return line
