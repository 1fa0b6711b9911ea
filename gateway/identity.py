"""The gateway id: unique in the fleet, stable across restarts.

It keys the Kafka transactional id and the checkpoint, so it must never change by accident.
The config's ``gateway.id`` wins. Without one, an id is derived once, on the first start,
from the host name plus a random suffix (``hall-pi-3f9c04d2``) and kept in the state
directory (``gateway-id``), where every later start reads it back.

Why a random suffix and not ``/etc/machine-id``: Pis are often set up by cloning one SD
card, and clones share their host name and, unless regenerated, their machine id; 32
random bits tell a thousand clones apart. The file lives with the spool (which depends on
it), so an upgrade or a rollback keeps the id; deleting the state directory starts over,
spool and all.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import socket
from collections.abc import Callable
from pathlib import Path

import structlog

from gateway.errors import ConfigError, PlatformError

__all__ = ["GATEWAY_ID_FILE", "derive_gateway_id", "is_valid_gateway_id", "resolve_gateway_id"]

_log = structlog.get_logger("edgegw.identity")

GATEWAY_ID_FILE = "gateway-id"
MAX_LENGTH = 63
_VALID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")  # the same rule as gateway.id in the config
_NOT_ALLOWED = re.compile(r"[^a-z0-9_.-]+")


def is_valid_gateway_id(value: str) -> bool:
    """Letters, digits, ``.``, ``_`` and ``-``, starting with a letter or digit, at most 63."""
    return bool(_VALID.match(value))


def derive_gateway_id(hostname: str, suffix: str) -> str:
    """``<host>-<suffix>``: the host name lower-cased and cleaned to the allowed characters."""
    host = _NOT_ALLOWED.sub("-", hostname.split(".", maxsplit=1)[0].lower()).strip("-._")
    host = host[: MAX_LENGTH - len(suffix) - 1].rstrip("-._") or "edgegw"
    return f"{host}-{suffix}"


def resolve_gateway_id(
    configured: str | None,
    state_dir: Path,
    *,
    hostname: Callable[[], str] = socket.gethostname,
    suffix: Callable[[], str] = lambda: secrets.token_hex(4),
) -> str:
    """The configured id, else the one kept in ``state_dir``, else a new one stored there.

    Raises :class:`ConfigError` for an invalid configured id and :class:`PlatformError`
    when the state directory cannot be read or written or holds an invalid id.
    """
    path = state_dir / GATEWAY_ID_FILE
    if configured is not None:
        if not is_valid_gateway_id(configured):
            raise ConfigError(
                f"gateway id {configured!r}: letters, digits, '.', '_' and '-', at most {MAX_LENGTH}"
            )
        _warn_if_changed(configured, path)
        return configured
    stored = _read(path)
    if stored is not None:
        return stored
    candidate = derive_gateway_id(hostname(), suffix())
    kept = _store(path, candidate)
    if kept == candidate:
        _log.info("gateway id derived", gateway_id=kept, path=str(path))
    return kept


def _warn_if_changed(configured: str, path: Path) -> None:
    """Kafka sees a new gateway when the id changes; say so when the config overrides a derived one."""
    try:
        stored = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return
    if stored and stored != configured:
        _log.warning(
            "gateway id from the config differs from the one derived earlier: Kafka sees a new gateway",
            gateway_id=configured,
            derived=stored,
            path=str(path),
        )


def _read(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise PlatformError(f"cannot read the gateway id from {path}: {exc}") from exc
    value = text.strip()
    if not is_valid_gateway_id(value):
        raise PlatformError(
            f"{path} holds no valid gateway id ({value[:80]!r}); set gateway.id in the config, "
            "or delete the file to derive a new id (Kafka will see a new gateway)"
        )
    return value


def _store(path: Path, value: str) -> str:
    """Write ``value`` unless another process got there first; return the id that is kept.

    The file appears complete or not at all: written to a temporary name, flushed to disk,
    then hard-linked to its final name, which fails if that name exists already.
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with temporary.open("x", encoding="utf-8") as handle:
            handle.write(value + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            kept = _read(path)
            if kept is None:  # pragma: no cover - removed again between link() and read
                raise PlatformError(f"{path} vanished while the gateway id was being stored") from None
            return kept
        _fsync_directory(path.parent)
    except OSError as exc:
        raise PlatformError(f"cannot store the gateway id in {path}: {exc}") from exc
    finally:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
    return value


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
